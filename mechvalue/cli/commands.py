"""The ``mechvalue`` subcommands other than ``run`` (wired up by :mod:`mechvalue.cli.main`)."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

from mechvalue.cli.circuits import cmd_attribute, cmd_patch
from mechvalue.cli.own_data import cmd_judge, read_user_records
from mechvalue.cli.progress import bar, duration, forward_progress, say, status
from mechvalue.cli.steering import load_model_from_args, read_vectors, steering, train_vectors, vectors_cache_path
from mechvalue.cli.tables import (
    MISSING,
    compact,
    frame_records,
    frame_table,
    is_number,
    key_table,
    key_values,
    merge_ci,
    print_json,
    read_csv,
    read_json,
    sig,
    table,
    write,
)
from mechvalue.core.errors import MechvalueError, UsageError


def side_by_side(left: tuple[str, str], right: tuple[str, str], width: int, layout: str = "auto") -> str:
    """Two titled texts in two columns (``width >= 100`` or ``layout="columns"``), else one after the other."""
    if layout == "rows" or (layout == "auto" and width < 100):
        return "\n\n".join(f"== {title} ==\n{text.strip()}" for title, text in (left, right))
    col = max(20, (width - 3) // 2)

    def block(title, text):
        lines = [title, "-" * min(col, max(len(title), 3))]
        for para in text.strip().splitlines() or [""]:
            lines += textwrap.wrap(para, col) or [""]
        return lines

    a, b = block(*left), block(*right)
    a += [""] * (len(b) - len(a))
    b += [""] * (len(a) - len(b))
    return "\n".join(f"{x:<{col}} | {y}".rstrip() for x, y in zip(a, b))


def find_run_vectors(run_dir: str | Path, value: str) -> Path:
    """The ConVA vectors file of ``value`` inside a run folder (any depth)."""
    from safetensors import safe_open

    run = Path(run_dir)
    if not run.is_dir():
        raise MechvalueError(f"{run}: no such run folder")
    for path in sorted(run.rglob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("mechvalue", "{}"))
        except Exception:  # noqa: BLE001 - unreadable files are not the ones we look for
            continue
        if meta.get("kind") == "ConvaVectors" and meta.get("value") == value:
            return path
    raise MechvalueError(f"{run} holds no ConVA vectors for {value}; run `mechvalue run --steps conva` there, "
                         f"or use `mechvalue extract --value {value}` and export --vectors FILE")


def _emit(args, data, text: str) -> None:
    """``--json``: the one JSON document on stdout; else the human-readable text."""
    if getattr(args, "json", False):
        print_json(data)
    else:
        write(text)


def cmd_locate(args) -> None:
    from mechvalue.core.values import OPPOSING_DIMENSIONS
    from mechvalue.methods.valuelocate import ValueLocateConfig, dimension_examples, locate

    if args.max_questions is not None and args.max_questions < 1:
        raise MechvalueError(f"--max-questions must be >= 1, got {args.max_questions}")
    config = ValueLocateConfig(tau=args.tau, max_questions=args.max_questions, batch_size=args.batch_size,
                               seed=args.seed)
    model = load_model_from_args(args)
    n = sum(len(dimension_examples(d, config)) for pair in OPPOSING_DIMENSIONS for d in pair)
    with forward_progress(model, n, "locating value neurons", unit="question", then="selecting neurons"):
        res = locate(model, config, progress=False)
    out = Path(args.out)
    res.save(out)
    grid = (0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15)
    curve = res.fraction_vs_tau(tuple(sorted(set(grid) | {config.tau})))
    curve.to_csv(out / "fraction_vs_tau.csv", index=False)
    res.layer_counts().to_csv(out / "layer_counts.csv", index=False)
    say(f"neuron sets and tables: {out}")
    total = res.n_layers * res.d_mlp
    rows = frame_records(curve)
    at = next(r for r in rows if r["tau"] == config.tau)
    chance = at.get("null_fraction")
    data = {"tau": config.tau, "n_neurons": total, "n_questions": n, "n_selected": at["n_selected"],
            "fraction": at["fraction"], "chance_fraction": chance,
            "sets": {dim: len(s) for dim, s in res.sets.items()}, "fraction_vs_tau": rows, "out": str(out)}
    fdr = chance / at["fraction"] if chance is not None and at["fraction"] > 0 else None
    data["false_discovery_rate"] = fdr
    chance_text = (f"; chance level {sig(100 * chance)}% (the split-half null), so an estimated "
                   f"{sig(100 * min(fdr, 1.0), 2)}% of the selection is chance" if fdr is not None
                   else f"; chance level {sig(100 * chance)}% (the split-half null)" if chance is not None
                   else "; chance level unknown (no split-half null)")
    lines = [f"ValueLocate: {n} scenario questions over {len(res.sets)} dimensions, tau {sig(config.tau, strip=True)}",
             f"selected {sig(100 * at['fraction'])}% of {total} MLP neurons{chance_text}"]
    if chance is not None and at["fraction"] <= chance:
        lines.append("  (not above chance: the same rule selects as many neurons between two halves of one dimension)")
    lines += ["", table(["dimension", "neurons"], [[d, len(s)] for d, s in res.sets.items()]), "",
              "fraction of MLP neurons selected vs tau (chance = split-half null fraction; * = this run's tau)",
              table(["tau", "", "n_selected", "fraction", "chance"],
                    [[r["tau"], "*" if r["tau"] == config.tau else "", r["n_selected"], r["fraction"],
                      r.get("null_fraction")] for r in rows])]
    _emit(args, data, "\n".join(lines))


def cmd_extract(args) -> None:
    from mechvalue.core.values import canonical

    value = canonical(args.value)
    pairs = read_user_records(args.pairs, "pairs", value) if args.pairs else None  # checked before the model loads
    if pairs is not None:
        from mechvalue.methods.conva import pair_texts

        pair_texts(pairs)  # enough train and test pairs, or a clear error now
    model = load_model_from_args(args)
    vv = train_vectors(args, model, value, template=args.template, threshold=args.threshold, pairs=pairs)
    path = vv.save(args.out or vectors_cache_path(model, value, args.cache_dir))
    rows = [{"layer": la, "accuracy": acc, "selected": la in vv.selected}
            for la, acc in zip(vv.layers, vv.accuracy.tolist())]
    data = {"value": value, "pairs": args.pairs or "bundled", "n_test_pairs": vv.meta.get("n_test"),
            "threshold": args.threshold,
            "selection": vv.meta.get("selection"), "selected": vv.selected, "layers": rows, "path": str(path)}
    text = "\n".join([
        f"{value}: held-out probe accuracy per layer ({vv.meta['n_test']} test pairs; * = selected)",
        table(["layer", "accuracy", "selected"],
              [[r["layer"], r["accuracy"], "*" if r["selected"] else ""] for r in rows]),
        f"selected layers: {vv.selected or 'none (no layer above the threshold)'}",
        f"saved: {path}"])
    _emit(args, data, text)


def cmd_steer(args) -> None:
    from mechvalue.core.values import canonical
    from mechvalue.lm.generation import generate
    from mechvalue.lm.prompts import chat

    value = canonical(args.value)
    given = read_vectors(args.vectors, value)
    if args.max_new_tokens < 1:
        raise MechvalueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    model = load_model_from_args(args)
    specs, system = steering(args, model, value, given)
    kw = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "seed": args.seed}
    with status(f"generating up to {args.max_new_tokens} tokens, base and steered",
                done="generated base and steered text"):
        base = generate(model, [chat(args.prompt)], **kw).texts[0]
        steered = generate(model, [chat(args.prompt, system=system)], specs, **kw).texts[0]
    width = shutil.get_terminal_size((80, 24)).columns
    data = {"value": value, "method": args.method, "prompt": args.prompt, "system": system, "base": base,
            "steered": steered, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
            "seed": args.seed}
    _emit(args, data, side_by_side(("base", base), (f"steered: {value} ({args.method})", steered), width,
                                   args.layout))


def _chunked(fn, items: list, pbar, step: int, *a, **kw):
    """``fn(model, items, ...)`` in chunks of ``step`` items (the batches fn makes anyway), advancing ``pbar``."""
    import pandas as pd

    parts = []
    for start in range(0, len(items), step):
        chunk = items[start:start + step]
        parts.append(fn(chunk, *a, **kw))
        pbar.update(len(chunk))
    return pd.concat(parts, ignore_index=True)


def cmd_evaluate(args) -> None:
    import pandas as pd

    from mechvalue.analysis.metrics import bootstrap_ci, paired_difference
    from mechvalue.core.values import canonical
    from mechvalue.data.bundled import load_dilemmas, load_portraits
    from mechvalue.evaluate.scores import dilemma_preference, questionnaire

    value = canonical(args.value)
    given = read_vectors(args.vectors, value)
    if args.max_items is not None and args.max_items < 2:
        raise MechvalueError(f"--max-items must be >= 2 (a CI needs two items), got {args.max_items}")
    own = read_user_records(args.dilemmas, "dilemmas", value) if args.dilemmas else None  # before the model loads
    model = load_model_from_args(args)
    specs, system = steering(args, model, value, given)
    items = load_portraits(value)[:args.max_items]
    dilemmas = (own if own is not None else load_dilemmas(value))[:args.max_items]
    bs = args.batch_size
    kw = {"batch_size": bs}
    with bar(2 * (len(items) + len(dilemmas)), f"evaluating {value} ({args.method})", unit="item") as pbar:
        q0 = _chunked(lambda c: questionnaire(model, c, **kw), items, pbar, bs)
        q1 = _chunked(lambda c: questionnaire(model, c, specs, system=system, **kw), items, pbar, bs)
        d0 = _chunked(lambda c: dilemma_preference(model, c, **kw), dilemmas, pbar, bs)
        d1 = _chunked(lambda c: dilemma_preference(model, c, specs, system=system, **kw), dilemmas, pbar, bs)
    rows = []
    for metric, base_df, steered_df, col in (("questionnaire (1-6)", q0, q1, "score"),
                                             ("dilemma preference (nats)", d0, d1, "pref"),
                                             ("dilemma win share", d0, d1, "win")):
        base, steered = base_df[col].to_numpy(), steered_df[col].to_numpy()
        b, s, d = bootstrap_ci(base), bootstrap_ci(steered), paired_difference(steered, base)
        rows.append({"metric": metric, "n": len(base), "base": b[0], "base_ci_low": b[1], "base_ci_high": b[2],
                     "steered": s[0], "steered_ci_low": s[1], "steered_ci_high": s[2], "delta": d[0],
                     "delta_ci_low": d[1], "delta_ci_high": d[2]})
    df = pd.DataFrame(rows)
    if args.out:
        from mechvalue.core.artifacts import write_text_atomic

        write_text_atomic(args.out, df.assign(value=value, method=args.method).to_csv(index=False))
        say(f"saved: {args.out}")
    recs = frame_records(df)
    cols, trows = merge_ci(list(df.columns), [[r[c] for c in df.columns] for r in recs])
    data = {"value": value, "method": args.method, "rows": recs}
    _emit(args, data, f"{value}, method {args.method}: base vs steered (bootstrap 95% CIs)\n" + table(cols, trows))


def cmd_audit(args) -> None:
    from mechvalue.evaluate.audit import default_texts, mark_max, neuron_summary, save_audit, top_activating

    texts = None
    if args.texts:
        path = Path(args.texts)
        if not path.is_file():
            raise MechvalueError(f"{path}: no such text file (one text per line)")
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.k < 1:
        raise MechvalueError(f"--k must be >= 1, got {args.k}")
    model = load_model_from_args(args)
    s = neuron_summary(model, args.layer, args.neuron)
    texts = texts if texts is not None else default_texts(args.n_texts)
    with forward_progress(model, len(texts), f"reading neuron {args.layer}.{args.neuron}"):
        top = top_activating(model, args.layer, args.neuron, texts, k=args.k, hook=args.hook,
                             batch_size=args.batch_size)
    saved = save_audit(args.save, "neuron", args.layer, args.neuron, args.label, top, summary=s) if args.save else None
    if saved:
        say(f"saved: {saved}")
    lines = [f"neuron {args.layer}.{args.neuron} ({s['hook']}): |W_out| = {sig(s['w_out_norm'])} "
             f"(rank {s['w_out_norm_rank']} of {s['d_mlp']} in its layer)"]
    for name, key in (("promotes", "top_tokens"), ("suppresses", "bottom_tokens")):
        lines.append(f"  {name}: " + ", ".join(f"{t['token']!r} {t['logit']:+.3g}" for t in s[key]))
    lines.append(f"top-activating texts (hook_{args.hook}; [[max token]]):")
    for n, ex in enumerate(top, 1):
        lines.append(f"  {n}. max {sig(ex['max'])}  {mark_max(ex).replace(chr(10), ' ')}")
    data = {"neuron": s, "hook": f"hook_{args.hook}", "top": top, "saved": str(saved) if saved else None}
    _emit(args, data, "\n".join(lines))


# ------------------------------------------------------------------ show

def _steps(run: Path, cfg: dict) -> list[dict]:
    """Each step's status and wall time: from config.json's ``steps`` / ``wall_seconds_per_step`` (new runs),
    else from the steps' ``DONE.json`` (older run folders)."""
    from mechvalue.pipeline.config import STEPS

    recorded = cfg.get("steps") if isinstance(cfg.get("steps"), dict) else {}
    walls = cfg.get("wall_seconds_per_step") if isinstance(cfg.get("wall_seconds_per_step"), dict) else {}
    wanted = (cfg.get("config") or {}).get("steps") if isinstance(cfg.get("config"), dict) else None
    rows = []
    for step in list(STEPS) + [s for s in recorded if s not in STEPS]:
        folder = run / step
        done = folder / "DONE.json"
        seconds = walls.get(step)
        if seconds is None and isinstance(recorded.get(step), dict):
            seconds = recorded[step].get("seconds")
        if done.is_file():
            state = "done"
            if seconds is None:
                try:
                    seconds = json.loads(done.read_text(encoding="utf-8")).get("seconds")
                except (json.JSONDecodeError, UnicodeDecodeError, OSError, AttributeError):
                    state = "done (DONE.json unreadable)"
        elif step in recorded:
            state = "missing (DONE.json deleted?)"
        elif folder.is_dir():
            state = "unfinished"
        else:
            state = "not run"
        if state == "not run" and isinstance(wanted, list) and step not in wanted:
            state = "not requested"
        rows.append({"step": step, "status": state, "seconds": seconds if is_number(seconds) else None})
    return rows


#: summary tables ``show`` prints, with a line saying what they are
SHOW_TABLES = {
    "summary.csv": "summary",
    "steering/summary.csv": "steering study, all targets pooled (estimate [95% CI])",
    "valuelocate/fraction_vs_tau.csv": "share of MLP neurons selected per tau; null_fraction = chance level "
                                       "(split-half null)",
}


def cmd_show(args) -> None:
    run = Path(args.run_dir)
    if not run.is_dir():
        raise MechvalueError(f"{run}: no such run folder")
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise MechvalueError(f"{run} has no config.json: not a run folder (make one: `mechvalue run --out {run}`)")
    cfg = read_json(cfg_path)
    if not isinstance(cfg, dict):
        cfg = {"config": cfg}
    steps = _steps(run, cfg)
    tables = {rel: read_csv(run / rel) for rel in SHOW_TABLES if (run / rel).is_file()}
    dual = read_json(run / "dual" / "structure.json") if (run / "dual" / "structure.json").is_file() else None
    if getattr(args, "json", False):
        data = {"run": str(run), "config": cfg, "steps": steps,
                "tables": {rel: [dict(zip(cols, r)) for r in rows] for rel, (cols, rows) in tables.items()}}
        if dual is not None:
            data["tables"]["dual/structure.json"] = dual
        print_json(data)
        return
    write("\n".join(_show_text(run, cfg, steps, tables, dual)))


def _show_text(run: Path, cfg: dict, steps: list[dict], tables: dict, dual) -> list[str]:
    head = {"run folder": str(run)}
    if cfg.get("started"):
        head["started"] = str(cfg["started"])
    what = []
    if cfg.get("quick"):
        what.append("quick run")
    if cfg.get("seed") is not None:
        what.append(f"seed {cfg['seed']}")
    if isinstance(cfg.get("values"), list):
        what.append(f"{len(cfg['values'])} values: {', '.join(map(str, cfg['values']))}")
    if what:
        head["run"] = ", ".join(what)
    model = cfg.get("model")
    if isinstance(model, dict):
        dims = ", ".join(f"{k} {model[k]}" for k in ("n_layers", "d_model", "d_mlp") if k in model)
        proc = model.get("processing")
        proc = ", ".join(k for k, v in proc.items() if v) or "none" if isinstance(proc, dict) else proc
        extra = "; ".join(x for x in (dims, str(model.get("dtype", "")).removeprefix("torch."),
                                      f"weight processing: {proc}" if proc else "") if x)
        head["model"] = f"{model.get('model_id', '?')} ({extra})" if extra else str(model.get("model_id", "?"))
    elif model is not None:
        head["model"] = str(model)
    if isinstance(cfg.get("versions"), dict):
        head["versions"] = ", ".join(f"{k} {v}" for k, v in cfg["versions"].items())
    if is_number(cfg.get("wall_seconds_last_invocation")):
        head["last invocation"] = duration(cfg["wall_seconds_last_invocation"])
    shown_keys = {"started", "quick", "seed", "values", "model", "versions", "wall_seconds_last_invocation",
                  "config", "steps", "wall_seconds_per_step", "command"}
    other = {k: v for k, v in cfg.items() if k not in shown_keys}
    out = [key_table(head)]
    if other:
        out += ["", "record", key_values(other)]
    if isinstance(cfg.get("config"), dict):
        out += ["", "config", key_values(cfg["config"])]
    out += ["", "steps", table(["step", "status", "wall time"],
                               [[s["step"], s["status"], duration(s["seconds"]) if s["seconds"] is not None
                                 else MISSING] for s in steps])]
    for rel, (cols, rows) in tables.items():
        cols, rows = merge_ci(cols, rows)
        out += ["", f"{rel}: {SHOW_TABLES[rel]}", table(cols, rows)]
    if dual is not None:
        out += ["", "dual/structure.json: dual mechanisms, structure",
                key_table(dual) if isinstance(dual, dict) else "  " + compact(dual)]
    if not tables and dual is None:
        out += ["", "(no summary tables yet: the run has not finished a step)"]
    return out


def cmd_export(args) -> None:
    from mechvalue.core.values import canonical
    from mechvalue.export import VectorBundle, export, load_vectors_file, vectors_from_conva

    if args.run and not args.value:
        raise UsageError("--run needs --value (which value's vectors to export)")
    value = canonical(args.value) if args.value else None
    src = find_run_vectors(args.run, value) if args.run else Path(args.vectors)
    fmt = args.format or ("gguf" if args.out.endswith(".gguf") else "safetensors")
    obj = load_vectors_file(src)
    if isinstance(obj, VectorBundle):
        layers = args.layers or obj.layers
        missing = [la for la in layers if la not in obj.vectors]
        if missing:
            raise MechvalueError(f"--layers {missing} not in {src} (layers {obj.layers})")
        vecs = {la: obj.vectors[la] * args.scale for la in layers}
        meta = {k: obj.meta.get(k) for k in ("model_id", "processing", "value", "source") if obj.meta.get(k)}
        values, hint = obj.meta.get("values"), args.hint or obj.meta.get("model_hint") or "llama"
    else:
        if value is not None and obj.value != value:
            raise MechvalueError(f"{src} holds {obj.value} vectors, not {value}")
        vecs = vectors_from_conva(obj, layers=args.layers, scale=args.scale, source=args.source)
        meta = {"model_id": obj.meta.get("model_id"), "processing": obj.meta.get("processing"), "value": obj.value,
                "source": f"conva_{args.source}", "scale": args.scale, "from": str(src)}
        values, hint = obj.value, args.hint or "llama"
    kw = {"hint": hint} if fmt == "gguf" else {}
    path = export(args.out, vecs, fmt, values=values, meta=meta, **kw)
    text = f"wrote {path} ({fmt}): layers {sorted(vecs)}, scale {compact(args.scale)}"
    if fmt == "gguf":
        text += f"\nllama.cpp: --control-vector-scaled {path} <strength> (direction.L is added after block L)"
    _emit(args, {"path": str(path), "format": fmt, "layers": sorted(vecs), "scale": args.scale,
                 "values": values, "hint": hint if fmt == "gguf" else None, "from": str(src)}, text)


def cmd_data_check(args=None) -> int:
    from mechvalue.data.bundled import check_data

    df = check_data()
    bad = df[df.context_bias > 0.5]
    _emit(args, {"values": frame_records(df), "context_bias_above_0.5": list(bad.value)},
          frame_table(df.drop(columns=["bias_positive_only", "bias_negative_only"])))
    if len(bad):
        print(f"context-bias above 0.5 for: {', '.join(bad.value)}", file=sys.stderr)
        return 1
    return 0


def cmd_info(args=None) -> None:
    from mechvalue.core.artifacts import package_versions
    from mechvalue.lm.models import default_cache_dir, offline_gguf_path

    versions = package_versions()
    head = {"offline model": str(offline_gguf_path()), "cache": str(default_cache_dir())}
    _emit(args, {"offline_model": head["offline model"], "cache": head["cache"], "versions": versions},
          key_table(head, indent="") + "\n\n" + table(["package", "version"], list(versions.items()), indent=""))


COMMANDS = {"locate": cmd_locate, "extract": cmd_extract, "steer": cmd_steer, "evaluate": cmd_evaluate,
            "audit": cmd_audit, "show": cmd_show, "export": cmd_export, "judge": cmd_judge, "patch": cmd_patch,
            "attribute": cmd_attribute}

