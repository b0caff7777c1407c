"""``mechvalue explain``: automated neuron explanations after Bills et al. 2023, scored by simulation against
random neurons of the same layers (see :mod:`mechvalue.evaluate.explain`).

Targets (exactly one): ``--layer L --neuron N``; ``--neurons FILE --top K`` (a saved NeuronSet, its top K by
|score|); ``--run DIR --neuron-class shared|intrinsic|prompted --top K`` (the run's ``dual/neuron_classes.csv``,
top K by projection norm, optionally of one ``--value``). Everything is checked before the model loads; the
explainer is any OpenAI-compatible endpoint (``--base-url`` / ``$OPENAI_BASE_URL``, ``--explainer-model`` /
``$MECHVALUE_EXPLAIN_MODEL``). ``--out`` gets explanations.csv, summary.json and cache.jsonl (every reply;
a rerun resumes and sends nothing already answered).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mechvalue.cli.progress import say, status
from mechvalue.cli.tables import jsonable, print_json, sig, table, write
from mechvalue.core.errors import CorruptFileError, DataError, UsageError

CLASSES = ("shared", "intrinsic", "prompted")
EXAMPLES = """
    mechvalue explain --layer 12 --neuron 345 --base-url http://127.0.0.1:8080/v1 --explainer-model qwen2.5-7b
    mechvalue explain --neurons runs/default/valuelocate/neurons_benevolence.safetensors --top 10 --random 10
    mechvalue explain --run runs/default --neuron-class shared --top 10 --value power --out runs/explain_shared
    mechvalue explain --layer 12 --neuron 345 --texts mine.jsonl --concurrency 8   # added to the bundled sample
    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 MECHVALUE_EXPLAIN_MODEL=qwen mechvalue explain --layer 3 --neuron 7
    # a llama.cpp server as the explainer:  python -m llama_cpp.server --model qwen2.5-7b-instruct.gguf --port 8080
    # --out gets explanations.csv (layer, index, kind, explanation, score, note, n_sim_tokens, unparsed, max_act,
    # top_example), summary.json (mean score of targets vs random neurons, bootstrap 95% CIs, their difference)
    # and cache.jsonl (every reply: rerun the same command to resume; nothing answered is asked again)"""
#: flag -> smallest allowed value (checked before anything loads)
_AT_LEAST = {"random": 0, "concurrency": 1, "max_tokens": 1, "n_explain": 1, "n_top_holdout": 0,
             "n_random_holdout": 0, "max_length": 1}


def add_explain_opts(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("targets (exactly one of --layer/--neuron, --neurons, --run)")
    t.add_argument("--layer", type=int, default=None, help="the neuron's block (with --neuron)")
    t.add_argument("--neuron", type=int, default=None, help="the neuron's index in blocks.L.mlp.hook_post")
    t.add_argument("--neurons", default=None, metavar="FILE", help="a saved NeuronSet (.safetensors), with --top")
    t.add_argument("--run", default=None, metavar="DIR",
                   help="a run folder with dual/neuron_classes.csv, with --neuron-class and --top")
    t.add_argument("--neuron-class", choices=CLASSES, default=None, help="with --run: which class of neurons")
    t.add_argument("--value", default=None, help="with --run: only this value's neurons (default: all values)")
    t.add_argument("--top", type=int, default=None,
                   help="with --neurons: the K of largest |score|; with --run: the K of largest projection norm")
    e = p.add_argument_group("explainer endpoint (OpenAI-compatible)")
    e.add_argument("--base-url", default=None, help="e.g. http://127.0.0.1:8080/v1 (default $OPENAI_BASE_URL)")
    e.add_argument("--explainer-model", default=None, help="model name at the endpoint ($MECHVALUE_EXPLAIN_MODEL)")
    e.add_argument("--api-key", default=None,
                   help="default $OPENAI_API_KEY (better: flags show in the process list); local servers need none")
    e.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (default 4)")
    e.add_argument("--max-tokens", type=int, default=64, help="cap on an explanation's length (default 64)")
    p.add_argument("--texts", default=None, metavar="FILE",
                   help="more texts: one per line, or .jsonl with 'text'; added to the bundled sample")
    p.add_argument("--n-texts", type=int, default=256, help="size of the bundled sample (default 256)")
    p.add_argument("--random", type=int, default=5, help="random neurons of the same layers: the baseline (default 5)")
    p.add_argument("--n-explain", type=int, default=10, help="top texts the explainer sees (default 10)")
    p.add_argument("--n-top-holdout", type=int, default=5, help="top held-out texts simulated (default 5)")
    p.add_argument("--n-random-holdout", type=int, default=5, help="random held-out texts simulated (default 5)")
    p.add_argument("--max-length", type=int, default=64, help="tokens read per text (default 64)")
    p.add_argument("--out", default="runs/explain", help="folder: explanations.csv, summary.json, cache.jsonl")


def _given(args) -> list[str]:
    return [name for name, on in (("--layer/--neuron", args.layer is not None or args.neuron is not None),
                                  ("--neurons", args.neurons is not None), ("--run", args.run is not None)) if on]


def _check(args) -> None:
    """Flags alone (no file read): exactly one target with its companions, numbers in range, an endpoint."""
    given = _given(args)
    if len(given) != 1:
        raise UsageError("give exactly one target: --layer L --neuron N, --neurons FILE --top K, or --run DIR "
                         f"--neuron-class CLASS --top K (got {' and '.join(given) or 'none'})")
    if given[0] == "--layer/--neuron" and (args.layer is None or args.neuron is None):
        raise UsageError("--layer and --neuron go together: give both")
    if given[0] != "--layer/--neuron" and args.top is None:
        raise UsageError(f"{given[0]} needs --top K (how many of its neurons to explain)")
    if given[0] == "--run" and args.neuron_class is None:
        raise UsageError(f"--run needs --neuron-class, one of {', '.join(CLASSES)}")
    extra = [f for f, v, ok in (("--top", args.top, given[0] != "--layer/--neuron"),
                                ("--neuron-class", args.neuron_class, given[0] == "--run"),
                                ("--value", args.value, given[0] == "--run")) if v is not None and not ok]
    if extra:
        raise UsageError(f"{', '.join(extra)} does not apply to {given[0]}")
    for name, low in _AT_LEAST.items():
        if getattr(args, name) < low:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    if not (args.base_url or os.environ.get("OPENAI_BASE_URL")) or not (
            args.explainer_model or os.environ.get("MECHVALUE_EXPLAIN_MODEL")):
        raise UsageError("no explainer endpoint configured: give --base-url URL (or $OPENAI_BASE_URL) and "
                         "--explainer-model NAME (or $MECHVALUE_EXPLAIN_MODEL) of an OpenAI-compatible server")


def _from_neuron_set(path: str, k: int) -> list[tuple[int, int]]:
    from mechvalue.analysis.neurons import NeuronSet

    s = NeuronSet.load(path)  # CorruptFileError names a missing or unreadable file
    if len(s) == 0:
        raise DataError(f"{path}: the NeuronSet {s.name!r} is empty; nothing to explain")
    order = s.scores.abs().argsort(descending=True, stable=True)[:k].tolist()
    return [(int(s.layers[j]), int(s.indices[j])) for j in order]


def _from_run(run: str, cls: str, k: int, value: str | None) -> list[tuple[int, int]]:
    import pandas as pd

    path = Path(run) / "dual" / "neuron_classes.csv"
    if not Path(run).is_dir():
        raise CorruptFileError(f"{run}: no such run folder")
    if not path.is_file():
        raise CorruptFileError(f"{path}: no such file; run `mechvalue run --steps dual --out {run}` first")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path}: not a readable CSV ({exc})") from exc
    need = {"value", "layer", "neuron", "class", "proj_norm"}
    if not need <= set(df.columns):
        raise CorruptFileError(f"{path}: lacks the columns {sorted(need - set(df.columns))}")
    from mechvalue.analysis.neurons import top_class_neurons

    keys = top_class_neurons(df, cls, k, value)
    if not keys:
        have = sorted(df.loc[(df["value"] == value) if value else slice(None), "class"].unique())
        raise DataError(f"{path}: no {cls} neurons{f' of {value}' if value else ''} (the file holds "
                        f"{', '.join(map(str, have)) or 'no classified neurons'})")
    return keys


def _targets(args) -> list[tuple[int, int]]:
    if args.layer is not None:
        return [(args.layer, args.neuron)]
    if args.neurons is not None:
        return _from_neuron_set(args.neurons, args.top)
    return _from_run(args.run, args.neuron_class, args.top, args.value)


def cmd_explain(args) -> None:
    from mechvalue.cli.own_data import read_texts
    from mechvalue.cli.steering import load_model_from_args
    from mechvalue.core.artifacts import write_json_atomic, write_text_atomic
    from mechvalue.evaluate.audit import default_texts
    from mechvalue.evaluate.explain import Explainer, explain_neurons, summarize

    _check(args)  # everything the user gave is checked before the model loads
    targets = _targets(args)
    texts = read_texts(args.texts)[1] if args.texts else []
    texts = list(dict.fromkeys(texts + default_texts(args.n_texts, seed=args.seed)))
    out = Path(args.out)
    explainer = Explainer(args.base_url, args.explainer_model, args.api_key, cache=out / "cache.jsonl",
                          concurrency=args.concurrency, max_tokens=args.max_tokens, progress=True)
    model = load_model_from_args(args)
    say(f"explaining {len(targets)} neuron(s) and {args.random} random one(s) on {len(texts)} texts with "
        f"{explainer.config.model} at {explainer.config.base_url}")
    with status("explaining and simulating"):
        df = explain_neurons(model, targets, texts, explainer, n_random=args.random, seed=args.seed,
                             n_explain=args.n_explain, n_top_holdout=args.n_top_holdout,
                             n_random_holdout=args.n_random_holdout, max_length=args.max_length,
                             batch_size=args.batch_size, progress=True)
    summary = summarize(df, seed=args.seed)
    write_text_atomic(out / "explanations.csv", df.to_csv(index=False))
    info = {"summary": summary, "explainer": explainer.config.model, "base_url": explainer.config.base_url,
            "n_texts": len(texts), "targets": [list(t) for t in targets], "stats": dict(explainer.stats),
            "options": {k: getattr(args, k) for k in ("seed", "random", "n_explain", "n_top_holdout",
                                                      "n_random_holdout", "max_length", "max_tokens")}}
    write_json_atomic(out / "summary.json", jsonable(info))
    say(f"saved: {out / 'explanations.csv'}, {out / 'summary.json'} (requests {explainer.stats['requests']}, "
        f"cached {explainer.stats['cache_hits']})")
    if args.json:
        print_json({**info, "rows": df.to_dict(orient="records")})
        return
    rows = [[r.layer, r.index, r.kind, r.score, r.explanation[:70] or f"({r.note})"] for r in df.itertuples()]
    lines = [table(["layer", "neuron", "kind", "score", "explanation"], rows), "",
             "mean simulation score (Pearson r), bootstrap 95% CI:"]
    for kind in ("target", "random"):
        s = summary[kind]
        lines.append(f"  {kind:<10} {sig(s['mean'])} [{sig(s['ci_low'])}, {sig(s['ci_high'])}]  "
                     f"({s['n_scored']} of {s['n']} scored)")
    d = summary["difference"]
    lines.append(f"  {'difference':<10} {sig(d['estimate'])} [{sig(d['ci_low'])}, {sig(d['ci_high'])}]")
    write("\n".join(lines))
