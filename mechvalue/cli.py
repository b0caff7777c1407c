"""``mechvalue`` command line.

    mechvalue run [--quick] [--config FILE] [--steps conva,steering] [--out runs/default]
    mechvalue locate | extract | steer | evaluate | audit | show | export ...
    mechvalue data check
    mechvalue info

Errors are printed on one line saying what to change; the exit status is 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import textwrap
from pathlib import Path

from .errors import CorruptFileError, MechvalueError

#: steps of ``mechvalue run`` (``judge`` also runs by itself before conva/dual/steering when they are asked for)
RUN_STEPS = ("judge", "valuelocate", "conva", "neva", "dual", "steering", "audits", "report")
METHODS = ("conva", "caa", "neva", "prompt")
#: ``run`` flags a config file may set (type checked), with the same names as the flags
RUN_KEYS = {"model": str, "values": (str, list), "device": str, "dtype": str, "out": str, "seed": int,
            "quick": bool, "batch_size": int, "steps": (str, list)}

EXAMPLES = """examples:
  mechvalue run --quick                 # smoke run on the offline default model
  mechvalue run --config run.toml --steps conva,steering
  mechvalue steer --value benevolence --method conva "Plan my weekend"
  mechvalue audit --layer 12 --neuron 345
  mechvalue show runs/default           # a run's config and summary tables
  mechvalue data check                  # counts, duplicates, context-bias per value
  mechvalue info                        # model and package versions
"""


class UsageError(MechvalueError):
    """A command line that does not parse."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 10,11,12, got {text!r}") from None


def _model_opts() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--model", default=None, help="model name, .gguf path or local folder (default: offline SmolLM2)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    return p


def _steer_opts() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--value", required=True, help="the value to steer toward (name or code: benevolence, BE)")
    p.add_argument("--method", choices=METHODS, default="conva", help="steering method (default: conva)")
    p.add_argument("--vectors", default=None, help="ConVA vectors from `mechvalue extract` (conva/caa)")
    p.add_argument("--cache-dir", default=None, help="where vectors trained on the fly are cached")
    p.add_argument("--layers", type=_ints, default=None, help="steering layers, e.g. 8,9,10 (default: selected)")
    p.add_argument("--p0", type=float, default=None, help="target probe probability (conva, neva)")
    p.add_argument("--coefficient", type=float, default=4.0, help="CAA coefficient (default 4)")
    return p


def _cmd(sub, name: str, help: str, examples: str, parents=()) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, parents=list(parents),
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "))


def build_parser(run_defaults: dict | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="mechvalue", description=__doc__.split("\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    sub = parser.add_subparsers(dest="command", required=True)
    model = _model_opts()
    p = _cmd(sub, "run", "analyse a model's values end to end and write a run folder", """
        mechvalue run --quick
        mechvalue run --values benevolence,power --out runs/bp
        mechvalue run --config run.toml --steps valuelocate,conva   # flags given win over the file""", [model])
    p.add_argument("--values", default=None, help="comma-separated values (default: all ten)")
    p.add_argument("--out", default="runs/default", help="run folder (reused: finished steps are skipped)")
    p.add_argument("--quick", action="store_true", help="small smoke run (a few minutes on a CPU)")
    p.add_argument("--config", default=None, help="JSON or TOML file; keys named like the flags set defaults")
    p.add_argument("--steps", default=None, help=f"comma-separated subset of {','.join(RUN_STEPS)} (default: all)")
    if run_defaults:
        p.set_defaults(**run_defaults)
    p = _cmd(sub, "locate", "ValueLocate: value neurons from activation-probability differences", """
        mechvalue locate
        mechvalue locate --tau 0.05 --max-questions 40 --out runs/locate""", [model])
    p.add_argument("--tau", type=float, default=0.03, help="threshold on the activation-probability difference")
    p.add_argument("--max-questions", type=int, default=None, help="scenario questions per dimension (default all)")
    p.add_argument("--out", default="runs/valuelocate", help="folder for neuron sets and tables")
    p = _cmd(sub, "extract", "ConVA: train probe value vectors on every layer and save them", """
        mechvalue extract --value benevolence
        mechvalue extract --value power --out power.safetensors --template chat""", [model])
    p.add_argument("--value", required=True)
    p.add_argument("--out", default=None, help="output file (default: the cache `steer` reads)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--template", choices=("raw", "chat"), default="raw")
    p.add_argument("--threshold", type=float, default=0.9, help="held-out accuracy a steering layer needs")
    p = _cmd(sub, "steer", "generate with and without steering and print both texts", """
        mechvalue steer --value benevolence "How should I spend my bonus?"
        mechvalue steer --value power --method caa --max-new-tokens 80 "Describe your ideal job."
        mechvalue steer --value SD --method prompt --layout rows "Plan my weekend." """, [model, _steer_opts()])
    p.add_argument("prompt", help="the user message")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--layout", choices=("auto", "columns", "rows"), default="auto",
                   help="side by side (columns) when the terminal is wide enough, else one after the other")
    p = _cmd(sub, "evaluate", "judge-free scores, base vs steered, with bootstrap CIs", """
        mechvalue evaluate --value benevolence
        mechvalue evaluate --value power --method prompt --out power_prompt.csv""", [model, _steer_opts()])
    p.add_argument("--out", default=None, help="also write the table as CSV")
    p.add_argument("--max-items", type=int, default=None, help="first N portraits and dilemmas (default all)")
    p = _cmd(sub, "audit", "a neuron's logit-lens tokens and top-activating texts", """
        mechvalue audit --layer 12 --neuron 345
        mechvalue audit --layer 12 --neuron 345 --k 10 --texts my_texts.txt --save audit.json""", [model])
    p.add_argument("--layer", type=int, required=True)
    p.add_argument("--neuron", type=int, required=True)
    p.add_argument("--k", type=int, default=5, help="examples to show")
    p.add_argument("--hook", choices=("post", "pre", "pre_linear"), default="post")
    p.add_argument("--texts", default=None, help="text file, one text per line (default: bundled sample)")
    p.add_argument("--n-texts", type=int, default=256, help="size of the bundled sample")
    p.add_argument("--label", default=None)
    p.add_argument("--save", default=None, help="write the audit as JSON")
    p = _cmd(sub, "show", "print a run's config and summary tables", """
        mechvalue show runs/default""")
    p.add_argument("run_dir")
    p = _cmd(sub, "export", "export value vectors for llama.cpp (GGUF) or as a safetensors bundle", """
        mechvalue export --vectors benevolence.safetensors --format gguf --out benevolence.gguf
        mechvalue export --run runs/default --value power --format safetensors --out power.safetensors
        llama-cli -m model.gguf --control-vector-scaled benevolence.gguf 4.0   # then, in llama.cpp""")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--vectors", help="ConVA vectors (from extract) or an earlier export")
    src.add_argument("--run", help="a run folder holding ConVA vectors (needs --value)")
    p.add_argument("--value", default=None)
    p.add_argument("--format", choices=("gguf", "safetensors"), default=None, help="default: from --out's suffix")
    p.add_argument("--out", required=True)
    p.add_argument("--scale", type=float, default=1.0, help="multiply the (unit) directions")
    p.add_argument("--layers", type=_ints, default=None, help="default: the selected layers")
    p.add_argument("--source", choices=("probe", "mean_diff"), default="probe",
                   help="probe: unit probe directions (ConVA); mean_diff: CAA's mean difference")
    p.add_argument("--hint", default=None, help="controlvector.model_hint (default: from the vectors, else llama)")
    d = _cmd(sub, "data", "inspect the bundled datasets", "mechvalue data check")
    d.add_argument("action", choices=["check"], help="check: counts, duplicates, context-bias per value")
    _cmd(sub, "info", "show the offline model path, cache folder and package versions", "mechvalue info")
    return parser


# ------------------------------------------------------------------ run: config file and steps

def load_config(path: str | Path) -> dict:
    """A JSON or TOML config file as a dict (``batch-size`` and ``batch_size`` both accepted)."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise CorruptFileError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    try:
        cfg = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise CorruptFileError(f"{path}: not valid {kind} ({str(exc).splitlines()[0]})") from exc
    if not isinstance(cfg, dict):
        raise CorruptFileError(f"{path}: the config must be a table/object of settings")
    return {k.replace("-", "_"): v for k, v in cfg.items()}


def config_defaults(cfg: dict, path: str | Path = "config") -> dict:
    """The ``run`` flag defaults a config sets (lists become comma strings); other keys stay in ``args.config``."""
    out = {}
    for key, typ in RUN_KEYS.items():
        if key not in cfg or cfg[key] is None:
            continue
        v = cfg[key]
        ok = isinstance(v, typ) and not (typ is int and isinstance(v, bool))
        if isinstance(v, list):
            ok = ok and all(isinstance(x, str) for x in v)
            v = ",".join(v)
        if not ok:
            names = {int: "an integer", bool: "true or false", str: "a string"}.get(typ, "a string or list of strings")
            raise MechvalueError(f"{path}: {key!r} must be {names}, got {cfg[key]!r}")
        out[key] = v
    return out


def parse_steps(text: str | None) -> list[str] | None:
    if text is None:
        return None
    steps = [s.strip().lower() for s in text.split(",") if s.strip()]
    bad = [s for s in steps if s not in RUN_STEPS]
    if bad or not steps:
        raise UsageError(f"unknown step(s) {bad or [text]}; --steps takes a comma-separated subset of "
                         f"{','.join(RUN_STEPS)}")
    return list(dict.fromkeys(steps))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse; for ``run``, a ``--config`` file fills defaults (explicit flags win), steps become a list."""
    args = build_parser().parse_args(argv)
    if args.command != "run":
        return args
    cfg = {}
    if args.config:
        cfg = load_config(args.config)
        args = build_parser(config_defaults(cfg, args.config)).parse_args(argv)
    args.config_path, args.config = args.config, cfg
    args.steps = parse_steps(args.steps)
    from .values import canonical_list

    canonical_list(args.values)  # unknown values fail before the model loads
    return args


# ------------------------------------------------------------------ helpers shared by commands

def _load_model(args):
    from . import models  # looked up at call time (tests replace models.load_model)

    return models.load_model(args.model, device=args.device, dtype=args.dtype)


def vectors_cache_path(model, value: str, cache_dir: str | Path | None = None) -> Path:
    """``<cache>/vectors/<model id>-<processing hash>/<value>.safetensors``."""
    from .models import default_cache_dir, model_info

    info = model_info(model)
    tag = hashlib.sha256(json.dumps(info.get("processing"), sort_keys=True, default=str).encode()).hexdigest()[:8]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(info.get("model_id")))
    root = Path(cache_dir) if cache_dir else default_cache_dir() / "vectors"
    return root / f"{slug}-{tag}" / f"{value}.safetensors"


def _read_vectors(path: str | None, value: str):
    """ValueVectors from ``--vectors`` (checked before the model loads), or None."""
    if path is None:
        return None
    from .methods.conva import ValueVectors

    vv = ValueVectors.load(path)
    if vv.value != value:
        raise MechvalueError(f"{path} holds {vv.value} vectors, not {value}; pass --value {vv.value} or other vectors")
    return vv


def _value_vectors(args, model, value: str, given=None):
    from .methods.conva import ValueVectors, train_value_vectors
    from .models import model_info

    if given is not None:
        if given.meta.get("model_id") != model_info(model).get("model_id"):
            raise CorruptFileError(f"{args.vectors}: vectors of {given.meta.get('model_id')!r}, not of this model")
        return given
    path = vectors_cache_path(model, value, args.cache_dir)
    if path.exists():
        try:
            return ValueVectors.load(path, model=model)
        except CorruptFileError as exc:
            print(f"mechvalue: {exc}; retraining", file=sys.stderr)
    print(f"training {value} probe vectors on every layer (cached at {path}) ...", file=sys.stderr)
    vv = train_value_vectors(model, value, batch_size=args.batch_size, seed=args.seed)
    vv.save(path)
    return vv


def _neva_specs(args, model, value: str) -> list:
    """NeVA's probe-push edits of ``value``'s neurons; the fitted edits are cached (fitting takes minutes)."""
    import math

    import torch

    from ._io import load_tensors, save_tensors
    from .interventions import ProbePush

    p0 = args.p0 or 0.9
    if not 0 < p0 < 1:
        raise MechvalueError(f"--p0 must be in (0, 1), got {p0}")
    path = vectors_cache_path(model, value, args.cache_dir).with_name(f"{value}.neva.safetensors")
    if not path.exists():
        from .methods.neva import edit_specs, select_neurons, train_neuron_probes

        print(f"fitting NeVA neuron probes for all values (cached at {path}) ...", file=sys.stderr)
        probes = train_neuron_probes(model, batch_size=args.batch_size, seed=args.seed)
        specs = edit_specs(probes, select_neurons(probes)[value], p0=p0)
        tensors = {f"{s.hook}|{k}": torch.as_tensor(getattr(s, k)) for s in specs
                   for k in ("w", "indices", "mean", "scale")}
        save_tensors(path, tensors, {"kind": "NevaEdit", "value": value, "b": {s.hook: float(s.b) for s in specs}})
    t, meta = load_tensors(path, kind="NevaEdit")
    target = math.log(p0 / (1 - p0))
    return [ProbePush(hook, t[f"{hook}|w"], b, target, indices=t[f"{hook}|indices"], mean=t[f"{hook}|mean"],
                      scale=t[f"{hook}|scale"]) for hook, b in meta["b"].items()]


def steering(args, model, value: str, given=None) -> tuple[list, str | None]:
    """(interventions, system prompt) for ``args.method``."""
    if args.method == "prompt":
        from .data import load_system_prompts

        prompts = load_system_prompts(value)
        return [], prompts[args.seed % len(prompts)].text
    if args.method == "neva":
        return _neva_specs(args, model, value), None
    from .methods.conva import caa, conva

    vv = _value_vectors(args, model, value, given)
    layers = args.layers or vv.selected
    if not layers:
        raise MechvalueError(f"{value}: no layer's probe accuracy exceeds the threshold; pass --layers, e.g. "
                             f"--layers {model.cfg.n_layers // 2}")
    bad = [la for la in layers if la not in vv.layers]
    if bad:
        raise MechvalueError(f"--layers {bad} not probed; the vectors cover layers {vv.layers}")
    if args.method == "caa":
        return caa(vv, args.coefficient, layers=layers), None
    return [conva(vv, p0=args.p0, layers=layers)], None


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


# ------------------------------------------------------------------ commands

def cmd_locate(args) -> None:
    from .methods.valuelocate import ValueLocateConfig, locate

    if args.max_questions is not None and args.max_questions < 1:
        raise MechvalueError(f"--max-questions must be >= 1, got {args.max_questions}")
    config = ValueLocateConfig(tau=args.tau, max_questions=args.max_questions, batch_size=args.batch_size,
                               seed=args.seed)
    model = _load_model(args)
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
    from .methods.conva import train_value_vectors
    from .values import canonical

    value = canonical(args.value)
    model = _load_model(args)
    vv = train_value_vectors(model, value, template=args.template, threshold=args.threshold,
                             batch_size=args.batch_size, seed=args.seed)
    print(f"{value}: held-out probe accuracy per layer ({vv.meta['n_test']} test pairs; * = selected)")
    for layer, acc in zip(vv.layers, vv.accuracy.tolist()):
        print(f"  layer {layer:>3}  {acc:.3f}{'  *' if layer in vv.selected else ''}")
    print(f"selected layers: {vv.selected or 'none (no layer above the threshold)'}")
    path = vv.save(args.out or vectors_cache_path(model, value, args.cache_dir))
    print(f"saved: {path}")


def cmd_steer(args) -> None:
    from .generation import generate
    from .prompts import chat
    from .values import canonical

    value = canonical(args.value)
    given = _read_vectors(args.vectors, value)
    if args.max_new_tokens < 1:
        raise MechvalueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    model = _load_model(args)
    specs, system = steering(args, model, value, given)
    kw = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "seed": args.seed}
    base = generate(model, [chat(args.prompt)], **kw).texts[0]
    steered = generate(model, [chat(args.prompt, system=system)], specs, **kw).texts[0]
    width = shutil.get_terminal_size((80, 24)).columns
    print(side_by_side(("base", base), (f"steered: {value} ({args.method})", steered), width, args.layout))


def cmd_evaluate(args) -> None:
    import pandas as pd

    from .data import load_dilemmas, load_portraits
    from .evaluate import dilemma_preference, questionnaire
    from .metrics import bootstrap_ci, paired_difference
    from .values import canonical

    value = canonical(args.value)
    given = _read_vectors(args.vectors, value)
    if args.max_items is not None and args.max_items < 2:
        raise MechvalueError(f"--max-items must be >= 2 (a CI needs two items), got {args.max_items}")
    model = _load_model(args)
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
        from ._io import write_text_atomic

        write_text_atomic(args.out, df.assign(value=value, method=args.method).to_csv(index=False))


def cmd_audit(args) -> None:
    from .audit import default_texts, mark_max, neuron_summary, save_audit, top_activating

    texts = None
    if args.texts:
        path = Path(args.texts)
        if not path.is_file():
            raise MechvalueError(f"{path}: no such text file (one text per line)")
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.k < 1:
        raise MechvalueError(f"--k must be >= 1, got {args.k}")
    model = _load_model(args)
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
    from .export import VectorBundle, export, load_vectors_file, vectors_from_conva
    from .values import canonical

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


def _data_check() -> int:
    import pandas as pd

    from .data import check_data

    df = check_data()
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df.drop(columns=["bias_positive_only", "bias_negative_only"]).to_string(index=False))
    bad = df[df.context_bias > 0.5]
    if len(bad):
        print(f"context-bias above 0.5 for: {', '.join(bad.value)}", file=sys.stderr)
        return 1
    return 0


def _info() -> None:
    from ._io import package_versions
    from .models import default_cache_dir, offline_gguf_path

    print(f"offline model: {offline_gguf_path()}\ncache: {default_cache_dir()}")
    for k, v in package_versions().items():
        print(f"{k}: {v}")


COMMANDS = {"locate": cmd_locate, "extract": cmd_extract, "steer": cmd_steer, "evaluate": cmd_evaluate,
            "audit": cmd_audit, "show": cmd_show, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if args.command == "run":
            from .run import run_main

            run_main(args)
        elif args.command == "data":
            return _data_check()
        elif args.command == "info":
            _info()
        else:
            COMMANDS[args.command](args)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except MechvalueError as exc:
        msg = " ".join(str(exc).split("\n"))
        print(f"mechvalue: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mechvalue: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
