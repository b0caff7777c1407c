"""``mechvalue patch`` and ``mechvalue attribute``: where a value prompt (or a steering edit) changes the model's
choice on dilemmas (see :mod:`mechvalue.methods.patching`)."""

from __future__ import annotations

import argparse

from mechvalue.cli.progress import say
from mechvalue.cli.tables import table, write
from mechvalue.core.errors import UsageError

RUNS = ("prompted", "base", "steered")
#: --component -> (component of methods.patching, per position)
PATCH_COMPONENTS = {"resid": ("resid_pre", True), "attn": ("attn_out", False), "mlp": ("mlp_out", False),
                    "heads": ("heads", False), "neurons": ("neurons", False)}


def add_circuit_opts(p: argparse.ArgumentParser, steer_methods: tuple[str, ...]) -> None:
    p.add_argument("--value", required=True, help="the value whose dilemmas are asked (name or code)")
    p.add_argument("--steer-method", choices=steer_methods, default="conva",
                   help="the edit of a 'steered' run (default conva, ungated)")
    p.add_argument("--vectors", default=None, help="ConVA vectors for a steered run (default: trained and cached)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--p0", type=float, default=None)
    p.add_argument("--coefficient", type=float, default=4.0)
    p.add_argument("--layers", type=lambda t: [int(x) for x in t.split(",") if x.strip()], default=None,
                   help="layers analysed, e.g. 10,15 (default all; neurons: the middle layer)")
    p.add_argument("--source", choices=RUNS, default="prompted",
                   help="the run patched from: prompted (a value system prompt), base (none) or steered (--method)")
    p.add_argument("--target", choices=RUNS, default="base", help="the run patched into (default base)")
    p.add_argument("--max-items", type=int, default=None, help="first N dilemmas of the value (default all)")
    p.add_argument("--dilemmas", default=None, metavar="FILE", help="your own dilemmas (JSONL, the bundled schema)")
    p.add_argument("--top", type=int, default=15, help="components printed (default 15)")
    p.add_argument("--out", required=True, help="CSV: component, layer, position, head, neuron, effect, ...")


def _side(args, model, value: str, which: str):
    """``(system prompt, interventions)`` of one run."""
    from mechvalue.cli.steering import steering
    from mechvalue.data.bundled import load_system_prompts

    if which == "base":
        return None, []
    if which == "prompted":
        prompts = load_system_prompts(value)
        return prompts[args.seed % len(prompts)].text, []
    ns = argparse.Namespace(**{**vars(args), "method": args.steer_method, "layers": None})  # --layers: patched ones
    specs, system = steering(ns, model, value)
    return system, specs


def _setup(args):
    from mechvalue.cli.own_data import read_user_records
    from mechvalue.cli.steering import load_model_from_args
    from mechvalue.core.values import canonical
    from mechvalue.data.bundled import load_dilemmas
    from mechvalue.methods.patching import alignment_note, dilemma_items

    value = canonical(args.value)
    if args.source == args.target and args.source != "steered":
        raise UsageError(f"--source and --target are both {args.source!r}: there is nothing to patch")
    dilemmas = read_user_records(args.dilemmas, "dilemmas", value) if args.dilemmas else load_dilemmas(value)
    dilemmas = dilemmas[:args.max_items] if args.max_items else dilemmas
    model = load_model_from_args(args)
    (s_sys, s_iv), (t_sys, t_iv) = _side(args, model, value, args.source), _side(args, model, value, args.target)
    items = dilemma_items(model, dilemmas, source_system=s_sys, target_system=t_sys)
    say(f"{len(items)} {value} dilemmas, source {args.source} -> target {args.target}; {alignment_note(items)}")
    return value, model, items, s_iv, t_iv


def _print(args, df, title: str) -> None:
    from mechvalue.cli.tables import print_json
    from mechvalue.core.artifacts import write_text_atomic

    write_text_atomic(args.out, df.to_csv(index=False))
    say(f"saved: {args.out} ({len(df)} rows)")
    top = df.assign(a=df["effect"].abs()).sort_values("a", ascending=False).head(args.top)
    cols = [c for c in ("method", "component", "layer", "position", "head", "neuron", "effect", "normalized_effect",
                        "ci_low", "ci_high", "n") if c in top and top[c].notna().any()]
    if args.json:
        print_json({"out": str(args.out), "attrs": dict(df.attrs), "top": top[cols].to_dict("records")})
        return
    write(title + "\n" + table(cols, top[cols].values.tolist()))


def cmd_patch(args) -> None:
    from mechvalue.methods.patching import patch_sweep

    component, per_position = PATCH_COMPONENTS[args.component]
    value, model, items, s_iv, t_iv = _setup(args)
    layers = args.layers if args.layers else (None if component != "neurons" else [model.cfg.n_layers // 2])
    df = patch_sweep(model, items, component, layers=layers, positions=per_position, source_interventions=s_iv,
                     target_interventions=t_iv)
    a = df.attrs
    _print(args, df, f"{value}: patching {args.component} from {args.source} into {args.target} (metric: dilemma "
                     f"preference, nats; source {a['source_metric']:.3g}, target {a['target_metric']:.3g}; "
                     f"normalized effect 1 = the whole gap); top {args.top} by |effect|")


def cmd_attribute(args) -> None:
    import pandas as pd

    from mechvalue.methods.patching import atp_validation, attribution_patching, direct_logit_attribution

    value, model, items, s_iv, t_iv = _setup(args)
    if args.method == "atp":
        df = attribution_patching(model, items, layers=args.layers, source_interventions=s_iv,
                                  target_interventions=t_iv)
        if args.validate:
            from pathlib import Path

            from mechvalue.core.artifacts import write_text_atomic

            pairs, summary = atp_validation(model, items, df, top=args.validate, n_random=args.validate,
                                            source_interventions=s_iv, target_interventions=t_iv)
            out = Path(args.out).with_suffix(".validation.csv")
            both = pd.concat([pairs, summary.assign(layer=None)], ignore_index=True)
            write_text_atomic(out, both.to_csv(index=False))
            write(f"AtP vs exact patching on the top {args.validate} and {args.validate} random neurons (Spearman rank "
                  f"correlation; poor agreement: read AtP as a hint only; saved {out})\n"
                  + table(list(summary.columns), summary.values.tolist()))
            df.attrs["validation"] = summary.to_dict("records")
    else:
        df = direct_logit_attribution(model, items, layers=args.layers, interventions=s_iv)
    _print(args, df, f"{value}: {args.method} of neurons and heads ({args.source} vs {args.target}; nats); "
                     f"top {args.top} by |effect|")
