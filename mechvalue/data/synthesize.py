"""Regenerate or extend the bundled value datasets with any OpenAI-compatible chat endpoint.

Contrastive pairs follow ConVA's two-step recipe (Jin et al. 2025): step 1 asks for diverse
positives of a value, step 2 asks, per positive, for ONE matched negative that keeps persona,
scene and sentence structure and flips only the value. System prompts, dilemmas, portraits
and neutral queries are asked for in batches. The prompts are the ``*_PROMPT`` constants.

Output is append-only JSONL in the schema of ``data/``, each record checked by data.py's
validator, ids like ``benevolence-pair-g0001``. ``n`` is the target number of generated records
in the file, so a rerun resumes: ids already there are skipped, every line is flushed and
fsynced, texts that normalise like an existing one are dropped. 429, 5xx, timeouts and
connection errors are retried with exponential backoff and jitter; malformed replies (an HTTP 200
body that is not JSON or not a chat completion, or content that is not the JSON asked for) are
re-asked. Both budgets are bounded; a request that exhausts them is skipped and recorded (its
message in ``failures``, malformed ones counted in ``skipped_malformed``) and the run goes on.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import random
import re
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Unpack

from tqdm.auto import tqdm

from mechvalue.core.endpoint import ClientConfig, GenerationError, MalformedReply, complete_lines
from mechvalue.core.errors import DataError, MechvalueError
from mechvalue.core.values import DEFINITIONS, OPPOSITE_PAIRS, VALUES, canonical
from mechvalue.data import bundled as _data
from mechvalue.data.bundled import ContrastPair, Dilemma, PortraitItem, Query, SystemPrompt
from mechvalue.data.synthesis_prompts import (
    DILEMMA_PROMPT,
    PAIR_NEGATIVE_PROMPT,
    PAIR_POSITIVES_PROMPT,
    PORTRAIT_PROMPT,
    QUERY_PROMPT,
    SCENES,
    SYSTEM_PROMPT_PROMPT,
)
from mechvalue.data.synthesis_requests import (
    Caller,
    DatasetSpec,
    GenerationResult,
    Options,
    normalize_text,
    parse_json_reply,
    reply_items,
    reply_strings,
    valid_only,
)

# prompts, requests and the client settings live in synthesis_prompts, synthesis_requests and core.endpoint
__all__ = ["DILEMMA_PROMPT", "KINDS", "PAIR_NEGATIVE_PROMPT", "PAIR_POSITIVES_PROMPT", "PORTRAIT_PROMPT",
           "QUERY_PROMPT", "SCENES", "SYSTEM_PROMPT_PROMPT", "ClientConfig", "GenerationError", "GenerationResult",
           "Options", "add_arguments", "generate_dilemmas", "generate_pairs", "generate_portraits",
           "generate_queries", "generate_system_prompts", "main", "parse_json_reply", "run_args"]


def _read_existing(path: Path, record: type) -> list[dict]:
    """Records already in ``path``; a partial last line (an interrupted write) is cut off with a warning."""
    raw = complete_lines(path, stacklevel=3)
    return [dataclasses.asdict(r) for r in _data.read_jsonl(path, record)] if raw.strip() else []


def _append(fh: Any, line: str) -> None:
    fh.write(line + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def _run(spec: DatasetSpec, n: int, out_path: str | Path, *, config: ClientConfig | None = None,
         base_url: str | None = None, model: str | None = None, api_key: str | None = None,
         concurrency: int = 4, seed: int = 0, batch_size: int = 10,
         progress: bool = True) -> GenerationResult:
    """Generate until ``out_path`` holds ``n`` records with ``spec``'s generated ids; see the module doc."""
    given = {k: v for k, v in (("base_url", base_url), ("model", model), ("api_key", api_key)) if v}
    cfg = dataclasses.replace(config, **given) if config else ClientConfig.resolve(base_url, model, api_key)
    if n < 0 or concurrency < 1 or batch_size < 1:
        raise MechvalueError(f"need n >= 0, concurrency >= 1 and batch_size >= 1, not {n}, {concurrency}, "
                             f"{batch_size}")
    out = Path(out_path)
    rows = _read_existing(out, spec.record)
    if spec.value and any(r["value"] != spec.value for r in rows):
        raise DataError(f"{out}: holds records of another value than {spec.value}; use one file per value")
    pat = re.compile(rf"^{re.escape(spec.prefix)}-g(\d+)$")
    nums = [int(m.group(1)) for r in rows if (m := pat.match(r["id"]))]
    result = GenerationResult(str(out), n, skipped=min(len(nums), n))
    seen = {normalize_text(r[f]) for r in rows + spec.existing for f in spec.dedup if f in r}
    next_num, need = max(nums, default=0) + 1, max(0, n - len(nums))
    caller, names = Caller(cfg, result, seed), [f.name for f in dataclasses.fields(spec.record)]
    scenes = list(SCENES)
    random.Random(f"{seed}:{spec.prefix}:{next_num}").shuffle(scenes)
    out.parent.mkdir(parents=True, exist_ok=True)
    pending: dict[Future, tuple[int, int, frozenset]] = {}  # future -> (step, items reserved, keys it holds)
    batches, max_batches = 0, 2 * math.ceil(need / batch_size) + 2  # a bound on step-1 requests

    def free() -> int:
        return need - result.written - sum(r for _, r, _ in pending.values())

    with open(out, "a", encoding="utf-8") as fh, ThreadPoolExecutor(concurrency) as pool, \
            tqdm(total=n, initial=result.skipped, desc=spec.prefix, disable=not progress) as bar:
        try:
            while True:
                while (k := min(batch_size, free())) > 0 and batches < max_batches:
                    hint = ", ".join(scenes[(3 * batches + i) % len(scenes)] for i in range(3))
                    pending[pool.submit(caller.ask, spec.prompt1(k, hint), spec.parse1)] = (1, k, frozenset())
                    batches += 1
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    step, _, held = pending.pop(fut)
                    for part in fut.result():
                        keys = [k for f in spec.dedup if f in part and (k := normalize_text(part[f])) not in held]
                        if any(k in seen for k in keys) or len(set(keys)) < len(keys):
                            result.duplicates += 1
                            continue
                        if free() <= 0:
                            break
                        seen.update(keys)
                        if step == 1 and spec.prompt2 and spec.parse2:
                            parse = functools.partial(spec.parse2, part)
                            pending[pool.submit(caller.ask, spec.prompt2(part), parse)] = (2, 1,
                                                                                            frozenset(keys))
                            continue
                        rec = _data._validate(spec.finish(part, f"{spec.prefix}-g{next_num:04d}"),
                                              spec.record, names, f"{out}: generated record")
                        _append(fh, json.dumps(dataclasses.asdict(rec), ensure_ascii=False))
                        next_num, result.written = next_num + 1, result.written + 1
                        bar.update(1)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return result


def _value_spec(value: str, record: type, tag: str, folder: str, key: str, template: str,
                finish: Callable[[dict, str], dict] | None = None, **fmt: str) -> DatasetSpec:
    def plain(part: dict, rid: str) -> dict:
        return {"id": rid, "value": value, **part}

    finish = finish or plain
    try:  # the bundled records of this value, for de-duplication
        rows = _data.read_jsonl(_data.data_dir() / folder / f"{value}.jsonl", record)
        existing = [dataclasses.asdict(r) for r in rows]
    except DataError:
        existing = []
    return DatasetSpec(record, f"{value}-{tag}", (key,), lambda k, hint: template.format(
        value=value, definition=DEFINITIONS[value], k=k, scenes=hint, **fmt),
        reply_strings(key, record, finish), finish, existing=existing, value=value)


def generate_pairs(value: str, n: int, out_path: str | Path, *, config: ClientConfig | None = None,
                   base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                   concurrency: int = 4, seed: int = 0, batch_size: int = 10, progress: bool = True,
                   test_fraction: float = 0.2) -> GenerationResult:
    """ConVA two-step contrastive pairs of ``value`` until ``out_path`` holds ``n`` generated pairs.

    ``config`` (or ``base_url``/``model``/``api_key``, which override it; else the environment,
    see :meth:`ClientConfig.resolve`) picks the endpoint; ``concurrency`` threads send requests;
    ``batch_size`` positives are asked for per step-1 request; ``seed`` drives the scene hints,
    the backoff jitter and the per-id split (``test_fraction`` of ids go to "test"). Afterwards
    the context-bias share of all pairs in the file is reported, with a warning above 0.5.
    """
    value = canonical(value)

    def finish(part: dict, rid: str) -> dict:
        split = "test" if random.Random(f"{seed}:{rid}").random() < test_fraction else "train"
        return {"id": rid, "value": value, "positive": part["positive"],
                "negative": part.get("negative", part["positive"]), "split": split}

    def parse2(part: dict, obj: Any) -> list[dict]:
        neg = obj.get("negative") if isinstance(obj, dict) else None
        if not isinstance(neg, str) or not neg.strip() or normalize_text(neg) == normalize_text(part["positive"]):
            raise MalformedReply('expected {"negative": <a changed sentence>}')
        return [{**part, "negative": neg.strip()}]

    spec = _value_spec(value, ContrastPair, "pair", "pairs", "positive", PAIR_POSITIVES_PROMPT, finish)
    spec.dedup, spec.parse2 = ("positive", "negative"), parse2
    spec.prompt2 = lambda part: PAIR_NEGATIVE_PROMPT.format(value=value, definition=DEFINITIONS[value],
                                                            positive=part["positive"])
    result = _run(spec, n, out_path, config=config, base_url=base_url, model=model, api_key=api_key,
                  concurrency=concurrency, seed=seed, batch_size=batch_size, progress=progress)
    pairs = _read_existing(Path(out_path), ContrastPair)
    if pairs:
        bias = _data.context_bias([p["positive"] for p in pairs], [p["negative"] for p in pairs])
        result.context_bias = bias.share
        if bias.share > 0.5:
            only_p, only_n = " ".join(bias.positive_only[:8]), " ".join(bias.negative_only[:8])
            warnings.warn(f"{out_path}: context-bias share {bias.share:.2f} > 0.5 (positive-only words: "
                          f"{only_p}; negative-only: {only_n}); the negatives do not keep the context: "
                          "regenerate or edit them", stacklevel=2)
    return result


def generate_system_prompts(value: str, n: int, out_path: str | Path,
                            **opts: Unpack[Options]) -> GenerationResult:
    """Value-priority system prompts; ``opts`` as in :func:`generate_pairs`."""
    value = canonical(value)
    spec = _value_spec(value, SystemPrompt, "sys", "system_prompts", "text", SYSTEM_PROMPT_PROMPT)
    return _run(spec, n, out_path, **opts)


def generate_portraits(value: str, n: int, out_path: str | Path, **opts: Unpack[Options]) -> GenerationResult:
    """PVQ-style portraits ("It is important to this person ..."); ``opts`` as in :func:`generate_pairs`."""
    value = canonical(value)
    spec = _value_spec(value, PortraitItem, "pvq", "portraits", "text", PORTRAIT_PROMPT)
    return _run(spec, n, out_path, **opts)


def generate_dilemmas(value: str, n: int, out_path: str | Path, **opts: Unpack[Options]) -> GenerationResult:
    """Dilemmas where ``value`` conflicts with another value; ``opts`` as in :func:`generate_pairs`."""
    value = canonical(value)
    opposite = [b if a == value else a for a, b in OPPOSITE_PAIRS if value in (a, b)]
    spec = _value_spec(value, Dilemma, "dil", "dilemmas", "question", DILEMMA_PROMPT,
                       conflicts=", ".join(opposite), others=", ".join(v for v in VALUES if v != value))
    keys = ("question", "value_answer", "conflict_value", "conflict_answer")
    spec.parse1 = lambda obj: valid_only(Dilemma, spec.finish, [
        {k: i[k] for k in keys} for i in reply_items(obj) if isinstance(i, dict) and set(i) == set(keys)])
    return _run(spec, n, out_path, **opts)


def generate_queries(n: int, out_path: str | Path, *, category: str = "advice",
                     **opts: Unpack[Options]) -> GenerationResult:
    """Neutral user queries of one ``category`` (ids ``<category>-query-g0001``); ``opts`` as above."""
    if not re.fullmatch(r"[a-z_]+", category):
        raise MechvalueError(f"category must be lower-case letters and underscores, not {category!r}")

    def finish(part: dict, rid: str) -> dict:
        return {"id": rid, "category": category, **part}

    try:
        existing = [dataclasses.asdict(q) for q in _data.load_queries()]
    except DataError:
        existing = []
    spec = DatasetSpec(Query, f"{category}-query", ("text",),
                 lambda k, hint: QUERY_PROMPT.format(k=k, category=category, scenes=hint),
                 reply_strings("text", Query, finish), finish, existing=existing)
    return _run(spec, n, out_path, **opts)


KINDS = {"pairs": generate_pairs, "system-prompts": generate_system_prompts, "dilemmas": generate_dilemmas,
         "portraits": generate_portraits, "queries": generate_queries}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``generate`` subcommand's arguments (to wire into the main CLI with :func:`run_args`)."""
    p.add_argument("kind", choices=list(KINDS))
    p.add_argument("--value", help="value name (every kind but queries)")
    p.add_argument("--category", default="advice", help="query category (queries only)")
    p.add_argument("--n", type=int, required=True, help="target number of generated records in --out")
    p.add_argument("--out", required=True, help="JSONL file; appended to, and resumed on a rerun")
    p.add_argument("--base-url", help="OpenAI-compatible base URL (default $OPENAI_BASE_URL)")
    p.add_argument("--model", help="model name (default $MECHVALUE_GEN_MODEL)")
    p.add_argument("--api-key", help="API key (default $OPENAI_API_KEY, which is safer)")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=10, help="items asked for per request")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--max-attempts", type=int, default=5, help="attempts per request on 429/5xx/timeouts")
    p.add_argument("--no-progress", action="store_true")


def run_args(args: argparse.Namespace) -> int:
    """Run a parsed ``generate`` command: 0 complete, 1 incomplete; raises MechvalueError on bad input."""
    cfg = ClientConfig.resolve(args.base_url, args.model, args.api_key, timeout=args.timeout,
                               max_attempts=args.max_attempts)
    opts = Options(config=cfg, concurrency=args.concurrency, seed=args.seed, batch_size=args.batch_size,
                   progress=not args.no_progress)
    if args.kind == "queries":
        result = generate_queries(args.n, args.out, category=args.category, **opts)
    elif not args.value:
        raise MechvalueError(f"generate {args.kind} needs --value (one of {', '.join(VALUES)})")
    else:
        result = KINDS[args.kind](args.value, args.n, args.out, **opts)
    print(result.summary())
    for msg in result.failures[:5]:
        print(f"  failed: {msg}", file=sys.stderr)
    return 0 if result.complete else 1


def main(argv: list[str] | None = None) -> int:
    """``mechvalue generate KIND ...``; errors print one line and return 2."""
    p = argparse.ArgumentParser(prog="mechvalue generate", description=__doc__.split("\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run_args(args)
    except MechvalueError as exc:
        print(f"mechvalue: error: {exc}", file=sys.stderr)
        return 2
