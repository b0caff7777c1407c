"""``mechvalue`` command line.

    mechvalue run [--quick] [--config FILE] [--steps conva,steering] [--out runs/default]
    mechvalue locate | extract | steer | evaluate | audit | show | export ...
    mechvalue data check
    mechvalue info

Errors are printed on one line saying what to change; the exit status is 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from .cli_commands import (
    COMMANDS,
    _data_check,
    _info,
    cmd_audit,
    cmd_evaluate,
    cmd_export,
    cmd_extract,
    cmd_locate,
    cmd_show,
    cmd_steer,
    find_run_vectors,
    side_by_side,
)
from .cli_steering import steering, vectors_cache_path
from .errors import CorruptFileError, MechvalueError

# the commands live in cli_commands and cli_steering; their public names stay importable from here
__all__ = ["COMMANDS", "EXAMPLES", "METHODS", "RUN_KEYS", "RUN_STEPS", "UsageError", "build_parser", "cmd_audit",
           "cmd_evaluate", "cmd_export", "cmd_extract", "cmd_locate", "cmd_show", "cmd_steer", "config_defaults",
           "find_run_vectors", "load_config", "main", "parse_args", "parse_steps", "side_by_side", "steering",
           "vectors_cache_path"]

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
