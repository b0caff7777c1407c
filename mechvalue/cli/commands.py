"""The ``mechvalue`` subcommands other than ``run`` (wired up by :mod:`mechvalue.cli.main`)."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

from mechvalue.cli.steering import load_model_from_args, read_vectors, steering, vectors_cache_path
from mechvalue.core.errors import CorruptFileError, MechvalueError


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


def cmd_locate(args) -> None:
    from mechvalue.methods.valuelocate import ValueLocateConfig, locate

    if args.max_questions is not None and args.max_questions < 1:
        raise MechvalueError(f"--max-questions must be >= 1, got {args.max_questions}")
    config = ValueLocateConfig(tau=args.tau, max_questions=args.max_questions, batch_size=args.batch_size,
                               seed=args.seed)
    model = load_model_from_args(args)
    res = locate(model, config)
    out = Path(args.out)
    res.save(out)
    res.fraction_vs_tau().to_csv(out / "fraction_vs_tau.csv", index=False)
    res.layer_counts().to_csv(out / "layer_counts.csv", index=False)
    print(f"tau={config.tau}: {res.fraction_selected():.4%} of {res.n_layers * res.d_mlp} neurons selected")
    for dim, s in res.sets.items():
        print(f"  {dim:<20} {len(s):>6} neurons")
    print(f"neuron sets and tables: {out}")


def cmd_extract(args) -> None:
    from mechvalue.core.values import canonical
    from mechvalue.methods.conva import train_value_vectors

    value = canonical(args.value)
    model = load_model_from_args(args)
    vv = train_value_vectors(model, value, template=args.template, threshold=args.threshold,
                             batch_size=args.batch_size, seed=args.seed)
    print(f"{value}: held-out probe accuracy per layer ({vv.meta['n_test']} test pairs; * = selected)")
    for layer, acc in zip(vv.layers, vv.accuracy.tolist()):
        print(f"  layer {layer:>3}  {acc:.3f}{'  *' if layer in vv.selected else ''}")
    print(f"selected layers: {vv.selected or 'none (no layer above the threshold)'}")
    path = vv.save(args.out or vectors_cache_path(model, value, args.cache_dir))
    print(f"saved: {path}")


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
    base = generate(model, [chat(args.prompt)], **kw).texts[0]
    steered = generate(model, [chat(args.prompt, system=system)], specs, **kw).texts[0]
    width = shutil.get_terminal_size((80, 24)).columns
    print(side_by_side(("base", base), (f"steered: {value} ({args.method})", steered), width, args.layout))


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
    model = load_model_from_args(args)
    specs, system = steering(args, model, value, given)
    items, dilemmas = load_portraits(value)[:args.max_items], load_dilemmas(value)[:args.max_items]
    kw = {"batch_size": args.batch_size}
    q0, q1 = questionnaire(model, items, **kw), questionnaire(model, items, specs, system=system, **kw)
    d0, d1 = (dilemma_preference(model, dilemmas, **kw),
              dilemma_preference(model, dilemmas, specs, system=system, **kw))
    rows = []
    for metric, base_df, steered_df, col in (("questionnaire (1-6)", q0, q1, "score"),
                                             ("dilemma preference (nats)", d0, d1, "pref"),
                                             ("dilemma win share", d0, d1, "win")):
        base, steered = base_df[col].to_numpy(), steered_df[col].to_numpy()
        b, s, d = bootstrap_ci(base), bootstrap_ci(steered), paired_difference(steered, base)
        rows.append({"metric": metric, "n": len(base), "base": b[0], "base_ci": f"[{b[1]:.3f}, {b[2]:.3f}]",
                     "steered": s[0], "steered_ci": f"[{s[1]:.3f}, {s[2]:.3f}]", "delta": d[0],
                     "delta_ci": f"[{d[1]:.3f}, {d[2]:.3f}]"})
    df = pd.DataFrame(rows)
    print(f"{value}, method {args.method}: base vs steered (bootstrap 95% CIs)")
    print(df.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.out:
        from mechvalue.core.artifacts import write_text_atomic

        write_text_atomic(args.out, df.assign(value=value, method=args.method).to_csv(index=False))


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
    top = top_activating(model, args.layer, args.neuron, texts if texts is not None else default_texts(args.n_texts),
                         k=args.k, hook=args.hook, batch_size=args.batch_size)
    print(f"neuron {args.layer}.{args.neuron} ({s['hook']}): |W_out| = {s['w_out_norm']:.3f} "
          f"(rank {s['w_out_norm_rank']} of {s['d_mlp']} in its layer)")
    for name, key in (("promotes", "top_tokens"), ("suppresses", "bottom_tokens")):
        print(f"  {name}: " + ", ".join(f"{t['token']!r} {t['logit']:+.2f}" for t in s[key]))
    print(f"top-activating texts (hook_{args.hook}; [[max token]]):")
    for n, ex in enumerate(top, 1):
        print(f"  {n}. max {ex['max']:.3f}  {mark_max(ex).replace(chr(10), ' ')}")
    if args.save:
        print(f"saved: {save_audit(args.save, 'neuron', args.layer, args.neuron, args.label, top, summary=s)}")


def _read_table(path: Path):
    import pandas as pd

    try:
        return pd.read_csv(path).to_string(index=False, float_format=lambda x: f"{x:.4g}")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path}: not a readable CSV table ({str(exc).splitlines()[0]})") from exc


def cmd_show(args) -> None:
    run = Path(args.run_dir)
    if not run.is_dir():
        raise MechvalueError(f"{run}: no such run folder")
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise MechvalueError(f"{run} has no config.json: not a run folder (make one: `mechvalue run --out {run}`)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{cfg_path}: not valid JSON ({exc})") from exc
    print(f"run: {run}")

    def show(obj: dict, indent: str) -> None:
        for k, v in obj.items():
            if isinstance(v, dict) and v and len(indent) < 6:
                print(f"{indent}{k}:")
                show(v, indent + "  ")
                continue
            if isinstance(v, list) and len(v) > 8:
                v = v[:8] + [f"... {len(v) - 8} more"]
            print(f"{indent}{k}: {json.dumps(v, default=str)}")

    show(cfg if isinstance(cfg, dict) else {"config": cfg}, "  ")
    shown = 0
    for rel in ("summary.csv", "steering/summary.csv", "valuelocate/fraction_vs_tau.csv"):
        if (run / rel).is_file():
            print(f"\n{rel}\n{_read_table(run / rel)}")
            shown += 1
    dual = run / "dual" / "structure.json"
    if dual.is_file():
        try:
            print(f"\ndual/structure.json\n{json.dumps(json.loads(dual.read_text(encoding='utf-8')), indent=2)}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptFileError(f"{dual}: not valid JSON ({exc})") from exc
        shown += 1
    if not shown:
        print("\n(no summary tables yet: the run has not finished a step)")


def cmd_export(args) -> None:
    from mechvalue.core.values import canonical
    from mechvalue.export import VectorBundle, export, load_vectors_file, vectors_from_conva

    if args.run and not args.value:
        raise MechvalueError("--run needs --value (which value's vectors to export)")
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
    print(f"wrote {path} ({fmt}): layers {sorted(vecs)}, scale {args.scale}")
    if fmt == "gguf":
        print(f"llama.cpp: --control-vector-scaled {path} <strength> (direction.L is added after block L)")


def cmd_data_check() -> int:
    import pandas as pd

    from mechvalue.data.bundled import check_data

    df = check_data()
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df.drop(columns=["bias_positive_only", "bias_negative_only"]).to_string(index=False))
    bad = df[df.context_bias > 0.5]
    if len(bad):
        print(f"context-bias above 0.5 for: {', '.join(bad.value)}", file=sys.stderr)
        return 1
    return 0


def cmd_info() -> None:
    from mechvalue.core.artifacts import package_versions
    from mechvalue.lm.models import default_cache_dir, offline_gguf_path

    print(f"offline model: {offline_gguf_path()}\ncache: {default_cache_dir()}")
    for k, v in package_versions().items():
        print(f"{k}: {v}")


COMMANDS = {"locate": cmd_locate, "extract": cmd_extract, "steer": cmd_steer, "evaluate": cmd_evaluate,
            "audit": cmd_audit, "show": cmd_show, "export": cmd_export}

