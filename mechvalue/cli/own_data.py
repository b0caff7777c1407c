"""Bring your own data: ``mechvalue judge --texts FILE``, and the user files of ``evaluate --dilemmas`` and
``extract --pairs`` (read and validated before any model loads; errors name the file, line and field)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mechvalue.cli.progress import bar, say, status
from mechvalue.cli.tables import table
from mechvalue.core.errors import DataError, UsageError

JUDGES = ("classifier", "lexicon", "openai")


def read_texts(path: str | Path) -> tuple[list[str], list[str]]:
    """``(ids, texts)`` from a ``.jsonl`` file (objects with a non-empty ``"text"`` and optional ``"id"``) or any
    other text file (one text per non-empty line; ids are line numbers)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    ids, texts = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if path.suffix != ".jsonl":
                ids.append(str(lineno))
                texts.append(line.rstrip("\n"))
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not obj["text"].strip():
                raise DataError(f"{path}:{lineno}: each line must be an object with a non-empty string 'text'")
            ids.append(str(obj.get("id", lineno)))
            texts.append(obj["text"])
    if not texts:
        raise DataError(f"{path}: file has no texts")
    return ids, texts


def read_user_records(path: str | Path, kind: str, value: str) -> list:
    """The ``value`` records of a user's JSONL file of ``kind`` (``"dilemmas"`` or ``"pairs"``), validated with
    the bundled schema; a file without records of ``value`` is refused naming the values it holds."""
    from mechvalue.data.bundled import ContrastPair, Dilemma, read_jsonl

    record = {"dilemmas": Dilemma, "pairs": ContrastPair}[kind]
    rows = read_jsonl(path, record)
    mine = [r for r in rows if r.value == value]
    if not mine:
        held = sorted({r.value for r in rows})
        raise DataError(f"{path}: no {kind} of {value} (the file holds {', '.join(held)}); pass --value "
                        f"{held[0]} or add {value} records")
    return mine


def make_judge(args, model=None):
    """The judge named by ``--judge`` (``classifier`` needs ``model``; ``openai`` reads ``--endpoint`` /
    ``$OPENAI_BASE_URL`` and ``--judge-model`` / ``$MECHVALUE_JUDGE_MODEL``)."""
    if args.judge == "lexicon":
        from mechvalue.evaluate.judges import LexiconJudge

        return LexiconJudge()
    if args.judge == "openai":
        from mechvalue.evaluate.openai_judge import OpenAIJudge

        return OpenAIJudge(args.endpoint, args.judge_model)
    from mechvalue.evaluate.judges import ClassifierJudge

    judge = ClassifierJudge.bundled(model)
    if judge is None:
        with status("no shipped judge for this model: training the classifier judge once"):
            judge = ClassifierJudge.train(model)
    return judge


def cmd_judge(args) -> None:
    """Score every text of ``--texts`` on the values (one row per text, one column per canonical value name)."""
    import numpy as np
    import pandas as pd

    from mechvalue.core.artifacts import write_text_atomic
    from mechvalue.core.values import VALUES, canonical_list
    from mechvalue.evaluate.judges import judge_many

    ids, texts = read_texts(args.texts)  # before any model loads
    values = canonical_list(args.values.split(",")) if args.values else list(VALUES)
    if args.judge == "openai" and not (args.endpoint or os.environ.get("OPENAI_BASE_URL")):
        raise UsageError("--judge openai needs --endpoint URL (or $OPENAI_BASE_URL) of an OpenAI-compatible server")
    model = None
    if args.judge == "classifier":
        from mechvalue.cli.steering import load_model_from_args

        model = load_model_from_args(args)
    judge = make_judge(args, model)
    chunk = max(1, args.batch_size)
    scores = []
    with bar(len(texts), f"judging {len(texts)} texts ({args.judge})", unit="text") as pbar:
        for i in range(0, len(texts), chunk):
            scores.append(judge_many(judge, texts[i:i + chunk], values))
            pbar.update(len(texts[i:i + chunk]))
    s = np.concatenate(scores)
    df = pd.DataFrame(s, columns=values)
    df.insert(0, "text", texts)
    df.insert(0, "id", ids)
    write_text_atomic(args.out, df.to_csv(index=False))
    say(f"saved: {args.out} ({len(df)} rows x {len(values)} values, judge {args.judge})")
    if args.json:
        from mechvalue.cli.tables import print_json

        print_json({"out": str(args.out), "judge": args.judge, "n": len(df), "mean": dict(zip(values, s.mean(0)))})
        return
    from mechvalue.cli.tables import write

    write(f"mean score per value over {len(df)} texts ({args.judge} judge, 0-1)\n"
          + table(["value", "mean", "max"], [[v, float(s[:, k].mean()), float(s[:, k].max())]
                                             for k, v in enumerate(values)]))
