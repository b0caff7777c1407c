"""Bundled value datasets: typed records, validating loaders, and quality checks.

The files under the repository's ``data/`` folder (see ``data/README.md`` for the data
card) are JSONL, one record per line, with exactly the keys of the record classes below.
Loaders validate every line (keys, non-empty strings, known value names, unique ids) and
raise :class:`~mechvalue.core.errors.DataError` naming the file and line on any problem.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mechvalue.core.errors import DataError, MechvalueError
from mechvalue.core.values import VALUES, canonical, canonical_dimension


@dataclass(frozen=True)
class ContrastPair:
    """A context-controlled pair: ``positive`` expresses ``value``; ``negative`` keeps the scene and drops it."""

    id: str
    value: str
    positive: str
    negative: str
    split: str


@dataclass(frozen=True)
class SystemPrompt:
    """A value-priority system prompt."""

    id: str
    value: str
    text: str


@dataclass(frozen=True)
class Dilemma:
    """A question where honouring ``value`` conflicts with ``conflict_value``, with one short answer for each."""

    id: str
    value: str
    question: str
    value_answer: str
    conflict_value: str
    conflict_answer: str


@dataclass(frozen=True)
class PortraitItem:
    """A PVQ-style portrait ("It is important to this person..."), rated 1-6 for "how much like you"."""

    id: str
    value: str
    text: str


@dataclass(frozen=True)
class Query:
    """A neutral user query (no value presupposed)."""

    id: str
    category: str
    text: str


@dataclass(frozen=True)
class ValueDescription:
    """ValueLocate material: a second-person description of someone holding an atomic value."""

    id: str
    dimension: str
    basic_value: str
    atomic_value: str
    description: str


@dataclass(frozen=True)
class ScenarioQuestion:
    """ValueLocate material: an everyday scenario question tied to a dimension and a description."""

    id: str
    dimension: str
    basic_value: str
    atomic_value: str
    description_id: str
    question: str


R = TypeVar("R")
SPLITS = ("train", "test")


def data_dir() -> Path:
    """The bundled data folder: ``$MECHVALUE_DATA``, the repository's ``data/``, or the wheel's copy."""
    env = os.environ.get("MECHVALUE_DATA")
    candidates = [Path(env)] if env else []
    package = Path(__file__).resolve().parents[1]  # mechvalue/
    candidates += [package.parent / "data", package / "_bundled_data"]
    for c in candidates:
        if (c / "pairs").is_dir():
            return c
    raise DataError(f"bundled data not found (looked in {[str(c) for c in candidates]}); set MECHVALUE_DATA")


#: a user's data folder laid out like ``data/`` (``mechvalue run --data DIR``): each of its files replaces the
#: bundled file of the same kind and value for the loaders below (set by :func:`using_data`)
USER_DATA: ContextVar[Path | None] = ContextVar("mechvalue_user_data", default=None)


def data_file(kind: str, name: str, root: str | Path | None = None) -> Path:
    """``<root>/<kind>/<name>.jsonl``; without ``root``: the user's file (:data:`USER_DATA`) if it has one, else
    the bundled one."""
    if root is not None:
        return Path(root) / kind / f"{name}.jsonl"
    user = USER_DATA.get()
    if user is not None and (user / kind / f"{name}.jsonl").is_file():
        return user / kind / f"{name}.jsonl"
    return data_dir() / kind / f"{name}.jsonl"


def check_user_data(folder: str | Path) -> list[Path]:
    """Validate every JSONL file of a user's data folder (same schemas and errors as the bundled data: file,
    line and field). Per-value kinds are ``<kind>/<value>.jsonl`` with a canonical value name; ``queries/*.jsonl``
    replaces the neutral queries. Returns the files found; a folder with none is refused."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder}: no such folder")
    kinds = {"pairs": ContrastPair, "system_prompts": SystemPrompt, "dilemmas": Dilemma, "portraits": PortraitItem}
    unknown = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in (*kinds, "queries"))
    if unknown:
        raise DataError(f"data folder {folder}: unknown sub-folders {unknown}; expected some of "
                        f"{sorted((*kinds, 'queries'))} (the layout of the bundled data/)")
    found = []
    for kind, record in kinds.items():
        for p in sorted((folder / kind).glob("*.jsonl")):
            if p.stem not in VALUES:
                raise DataError(f"{p}: file names must be canonical value names ({', '.join(VALUES)}), "
                                f"not {p.stem!r}")
            wrong = [r.id for r in read_jsonl(p, record) if r.value != p.stem]
            if wrong:
                raise DataError(f"{p}: records of another value: {wrong[:3]}")
            found.append(p)
    queries = sorted((folder / "queries").glob("*.jsonl"))
    for p in queries:
        read_jsonl(p, Query)
    if not found and not queries:
        raise DataError(f"data folder {folder}: no JSONL files in the layout of data/ (e.g. dilemmas/power.jsonl)")
    return found + queries


@contextmanager
def using_data(folder: str | Path | None) -> Iterator[list[Path]]:
    """Within the block the loaders read the user's files of ``folder`` (validated first) in place of the
    bundled ones; ``None`` changes nothing."""
    if folder is None:
        yield []
        return
    files = check_user_data(folder)
    token = USER_DATA.set(Path(folder).resolve())
    try:
        yield files
    finally:
        USER_DATA.reset(token)


def read_jsonl(path: str | Path, record: type[R],
               check: Callable[[dict[str, Any], str], dict[str, Any]] | None = None) -> list[R]:
    """Read and validate a JSONL file of ``record`` dataclasses: one JSON object per line with exactly the record's
    keys and a unique ``id``. Every field must be a non-empty string, unless ``check(obj, where)`` is given: it
    validates (and may convert) the fields of a record with other types instead, raising :class:`DataError`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    fields = [f.name for f in dataclasses.fields(record)]
    out, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
            out.append(_validate(obj, record, fields, f"{path}:{lineno}", check))
            if out[-1].id in seen:
                raise DataError(f"{path}:{lineno}: duplicate id {out[-1].id!r}")
            seen.add(out[-1].id)
    if not out:
        raise DataError(f"{path}: file has no records")
    return out


def _validate(obj: Any, record: type[R], fields: list[str], where: str, check=None) -> R:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object")
    missing, extra = set(fields) - set(obj), set(obj) - set(fields)
    if missing or extra:
        raise DataError(f"{where}: keys must be {fields}; missing {sorted(missing)}, unexpected {sorted(extra)}")
    if check is not None:
        if not isinstance(obj["id"], str) or not obj["id"].strip():
            raise DataError(f"{where}: 'id' must be a non-empty string")
        return record(**check(obj, where))
    for k in fields:
        if not isinstance(obj[k], str) or not obj[k].strip():
            raise DataError(f"{where}: {k!r} must be a non-empty string")
    try:
        for k in ("value", "conflict_value", "basic_value"):
            if k in obj:
                obj[k] = canonical(obj[k])
        if "dimension" in obj:
            obj["dimension"] = canonical_dimension(obj["dimension"])
    except MechvalueError as exc:
        raise DataError(f"{where}: {exc}") from exc
    if "split" in obj and obj["split"] not in SPLITS:
        raise DataError(f"{where}: split must be one of {SPLITS}, not {obj['split']!r}")
    if obj.get("conflict_value") is not None and obj["conflict_value"] == obj.get("value"):
        raise DataError(f"{where}: conflict_value equals value")
    return record(**obj)


def _per_value(kind: str, record: type[R], values: Iterable[str] | str | None, root: Path | None) -> list[R]:
    names = VALUES if values is None else [canonical(v) for v in ([values] if isinstance(values, str) else values)]
    out: list[R] = []
    for v in names:
        path = data_file(kind, v, root)
        rows = read_jsonl(path, record)
        wrong = [r.id for r in rows if r.value != v]
        if wrong:
            raise DataError(f"{path}: records of another value: {wrong[:3]}")
        out.extend(rows)
    return out


def load_pairs(values: Iterable[str] | str | None = None, split: str | None = None,
               root: str | Path | None = None) -> list[ContrastPair]:
    """Context-controlled contrastive pairs of ``values`` (default all ten), optionally one split."""
    if split is not None and split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS} or None, not {split!r}")
    pairs = _per_value("pairs", ContrastPair, values, root)
    return [p for p in pairs if split is None or p.split == split]


def load_system_prompts(values: Iterable[str] | str | None = None,
                        root: str | Path | None = None) -> list[SystemPrompt]:
    return _per_value("system_prompts", SystemPrompt, values, root)


def load_dilemmas(values: Iterable[str] | str | None = None, root: str | Path | None = None) -> list[Dilemma]:
    return _per_value("dilemmas", Dilemma, values, root)


def load_portraits(values: Iterable[str] | str | None = None, root: str | Path | None = None) -> list[PortraitItem]:
    return _per_value("portraits", PortraitItem, values, root)


def load_queries(root: str | Path | None = None) -> list[Query]:
    """All neutral user queries (every ``data/queries/*.jsonl``, or the user's ``queries/`` under
    :func:`using_data`), sorted by id."""
    user = USER_DATA.get() if root is None else None
    if user is not None and sorted((user / "queries").glob("*.jsonl")):
        root = user
    root = Path(root) if root is not None else data_dir()
    files = sorted((root / "queries").glob("*.jsonl"))
    if not files:
        raise DataError(f"{root / 'queries'}: no query files")
    rows = [q for f in files for q in read_jsonl(f, Query)]
    dup = [k for k, c in Counter(q.id for q in rows).items() if c > 1]
    if dup:
        raise DataError(f"duplicate query ids across files: {dup[:5]}")
    return sorted(rows, key=lambda q: q.id)


def load_descriptions(dimension: str, root: str | Path | None = None) -> list[ValueDescription]:
    dimension = canonical_dimension(dimension)
    root = Path(root) if root is not None else data_dir()
    return read_jsonl(root / "valuelocate" / "descriptions" / f"{dimension}.jsonl", ValueDescription)


def load_scenarios(dimension: str, root: str | Path | None = None) -> list[ScenarioQuestion]:
    """ValueLocate scenario questions of one higher-order dimension; checks their description links."""
    dimension = canonical_dimension(dimension)
    root = Path(root) if root is not None else data_dir()
    rows = read_jsonl(root / "valuelocate" / "questions" / f"{dimension}.jsonl", ScenarioQuestion)
    desc = {d.id for d in load_descriptions(dimension, root)}
    broken = [q.id for q in rows if q.description_id not in desc]
    if broken:
        raise DataError(f"scenario questions {broken[:3]} reference unknown descriptions")
    return rows


# ---------------------------------------------------------------- quality checks

_WORD = re.compile(r"[a-z]+")


def content_words(text: str) -> list[str]:
    """Lower-cased alphabetic words of 3+ letters that are not English stop words (scikit-learn's list)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return [w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in ENGLISH_STOP_WORDS]


@dataclass(frozen=True)
class ContextBias:
    """ConVA's context-bias test: the share of each side's top-k content words absent from the other side's top-k."""

    share: float
    positive_only: tuple[str, ...]
    negative_only: tuple[str, ...]
    k: int


def context_bias(positives: Sequence[str], negatives: Sequence[str], k: int = 25) -> ContextBias:
    """Top-``k`` content words of positives vs negatives; ``share`` = one-sided words / (2k).

    ConVA reports 22/25 (88%) for naive pairs and 8/25 (32%) for context-controlled ones;
    regenerate data whose share is above 0.5.
    """
    if not positives or not negatives:
        raise DataError("context_bias needs non-empty positives and negatives")
    top_p = [w for w, _ in Counter(w for t in positives for w in content_words(t)).most_common(k)]
    top_n = [w for w, _ in Counter(w for t in negatives for w in content_words(t)).most_common(k)]
    only_p = tuple(w for w in top_p if w not in top_n)
    only_n = tuple(w for w in top_n if w not in top_p)
    denom = len(top_p) + len(top_n)
    return ContextBias((len(only_p) + len(only_n)) / denom if denom else 0.0, only_p, only_n, k)


def _near_duplicates(texts: Sequence[str]) -> int:
    norm = [" ".join(_WORD.findall(t.lower())) for t in texts]
    return sum(c - 1 for c in Counter(norm).values() if c > 1)


def check_data(root: str | Path | None = None):
    """Per-value counts, duplicate counts and the context-bias share, as a DataFrame."""
    import pandas as pd

    rows = []
    for v in VALUES:
        pairs = load_pairs(v, root=root)
        bias = context_bias([p.positive for p in pairs], [p.negative for p in pairs])
        dil = load_dilemmas(v, root=root)
        rows.append({
            "value": v, "pairs": len(pairs), "pairs_train": sum(p.split == "train" for p in pairs),
            "pairs_test": sum(p.split == "test" for p in pairs),
            "duplicate_pairs": _near_duplicates([p.positive for p in pairs]) + _near_duplicates(
                [p.negative for p in pairs]),
            "system_prompts": len(load_system_prompts(v, root=root)), "dilemmas": len(dil),
            "duplicate_dilemmas": _near_duplicates([d.question for d in dil]),
            "portraits": len(load_portraits(v, root=root)), "context_bias": round(bias.share, 3),
            "bias_positive_only": " ".join(bias.positive_only), "bias_negative_only": " ".join(bias.negative_only),
        })
    return pd.DataFrame(rows)
