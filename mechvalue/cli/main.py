"""``mechvalue`` command line.

    mechvalue run [--quick] [--config FILE] [--steps conva,steering] [--out runs/default]
    mechvalue locate | extract | steer | evaluate | judge | audit | explain | show | export ...
    mechvalue data check
    mechvalue info

Errors are printed on one line saying what to change; the exit status is 2.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import textwrap

from mechvalue.cli.circuits import PATCH_COMPONENTS, add_circuit_opts
from mechvalue.cli.commands import COMMANDS, cmd_data_check, cmd_info
from mechvalue.cli.explain import EXAMPLES as EXPLAIN_EXAMPLES
from mechvalue.cli.explain import add_explain_opts
from mechvalue.core.errors import MechvalueError, UsageError
from mechvalue.core.hooks import BACKENDS
from mechvalue.methods.registry import CLI_METHODS
from mechvalue.pipeline.config import STEPS

EXAMPLES = """examples:
  mechvalue run --quick                 # smoke run on the offline default model
  mechvalue run --config run.toml --steps conva,steering
  mechvalue steer --value benevolence --method conva "Plan my weekend"
  mechvalue audit --layer 12 --neuron 345
  mechvalue explain --layer 12 --neuron 345 --base-url http://127.0.0.1:8080/v1 --explainer-model qwen
  mechvalue show runs/default           # a run's config and summary tables
  mechvalue data check                  # counts, duplicates, context-bias per value
  mechvalue info                        # model and package versions
"""




class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 10,11,12, got {text!r}") from None


def _model_opts() -> argparse.ArgumentParser:
    """Model flags (a new parser per command: argparse shares the action objects of ``parents``)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--model", default=None, help="model name, .gguf path or local folder (default: offline SmolLM2)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16")
    p.add_argument("--backend", default="auto", choices=("auto", *BACKENDS),
                   help="HookedTransformer (hooked) or TransformerBridge (bridge); auto: hooked where "
                        "TransformerLens converts the architecture (see `mechvalue models`)")
    p.add_argument("--n-devices", type=int, default=1,
                   help="spread the layers over this many CUDA devices (a model too large for one card)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    return p


def _steer_opts() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--value", required=True, help="the value to steer toward (name or code: benevolence, BE)")
    p.add_argument("--method", choices=CLI_METHODS, default="conva",
                   help="steering method (default: conva, ungated; see `mechvalue.methods.registry`)")
    p.add_argument("--vectors", default=None, help="ConVA vectors from `mechvalue extract` (conva/caa)")
    p.add_argument("--cache-dir", default=None, help="where vectors trained on the fly are cached")
    p.add_argument("--layers", type=_ints, default=None, help="steering layers, e.g. 8,9,10 (default: selected)")
    p.add_argument("--p0", type=float, default=None, help="target probe probability (conva, neva)")
    p.add_argument("--coefficient", type=float, default=4.0, help="CAA coefficient (default 4)")
    return p


def _cmd(sub, name: str, help: str, examples: str, parents=()) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help, parents=list(parents),
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "))
    p.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout (full precision) instead of tables; messages and "
                        "progress stay on stderr")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mechvalue", description=__doc__.split("\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    sub = parser.add_subparsers(dest="command", required=True)
    p = _cmd(sub, "run", "analyse a model's values end to end and write a run folder", """
        mechvalue run --quick
        mechvalue run --values benevolence,power --out runs/bp
        mechvalue run --config run.toml --steps valuelocate,conva   # flags given win over the file
        mechvalue run --model Qwen/Qwen2.5-7B-Instruct --dtype bfloat16 --dry-run""", [_model_opts()])
    p.add_argument("--values", default=None, help="comma-separated values (default: all ten)")
    p.add_argument("--out", default=None, help="run folder (default runs/default; reused: finished steps are skipped)")
    p.add_argument("--quick", action="store_true", help="small smoke run (a few minutes on a CPU)")
    p.add_argument("--config", default=None, help="JSON or TOML file; keys named like the flags set defaults")
    p.add_argument("--steps", default=None, help=f"comma-separated subset of {','.join(STEPS)} (default: all)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="your own data: a folder laid out like data/ (e.g. DIR/dilemmas/power.jsonl); its files "
                        "replace the bundled ones of the same kind and value, validated before anything runs")
    p.add_argument("--force-step", default=None, metavar="STEPS",
                   help="recompute these steps (comma-separated) even if their inputs are unchanged")
    p.add_argument("--explain-base-url", default=None, metavar="URL",
                   help="an OpenAI-compatible endpoint that explains the dual step's neuron classes (audits step)")
    p.add_argument("--explain-model", default=None, help="the explainer model's name at --explain-base-url")
    p.add_argument("--dry-run", action="store_true",
                   help="print the model's parameter count, the memory its weights, KV cache and activations need "
                        "and the estimated time per step, without loading it; then stop")
    # unset flags fall back to the file, then the defaults
    p.set_defaults(dtype=None, batch_size=None, seed=None, backend=None, n_devices=None)
    p = _cmd(sub, "locate", "ValueLocate: value neurons from activation-probability differences", """
        mechvalue locate
        mechvalue locate --tau 0.05 --max-questions 40 --out runs/locate""", [_model_opts()])
    p.add_argument("--tau", type=float, default=0.03, help="threshold on the activation-probability difference")
    p.add_argument("--max-questions", type=int, default=None, help="scenario questions per dimension (default all)")
    p.add_argument("--out", default="runs/valuelocate", help="folder for neuron sets and tables")
    p = _cmd(sub, "extract", "ConVA: train probe value vectors on every layer and save them", """
        mechvalue extract --value benevolence
        mechvalue extract --value power --out power.safetensors --template chat""", [_model_opts()])
    p.add_argument("--value", required=True)
    p.add_argument("--out", default=None, help="output file (default: the cache `steer` reads)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--template", choices=("raw", "chat"), default="raw")
    p.add_argument("--threshold", type=float, default=0.9, help="held-out accuracy a steering layer needs")
    p.add_argument("--pairs", default=None, metavar="FILE",
                   help="your own context-controlled pairs (JSONL in the schema of data/pairs/; their train/test "
                        "split is used) instead of the bundled ones")
    p = _cmd(sub, "steer", "generate with and without steering and print both texts", """
        mechvalue steer --value benevolence "How should I spend my bonus?"
        mechvalue steer --value power --method caa --max-new-tokens 80 "Describe your ideal job."
        mechvalue steer --value SD --method prompt --layout rows "Plan my weekend." """, [_model_opts(), _steer_opts()])
    p.add_argument("prompt", help="the user message")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--layout", choices=("auto", "columns", "rows"), default="auto",
                   help="side by side (columns) when the terminal is wide enough, else one after the other")
    p = _cmd(sub, "evaluate", "judge-free scores, base vs steered, with bootstrap CIs", """
        mechvalue evaluate --value benevolence
        mechvalue evaluate --value power --method prompt --out power_prompt.csv""", [_model_opts(), _steer_opts()])
    p.add_argument("--out", default=None, help="also write the table as CSV")
    p.add_argument("--max-items", type=int, default=None, help="first N portraits and dilemmas (default all)")
    p.add_argument("--dilemmas", default=None, metavar="FILE",
                   help="your own dilemmas (JSONL in the schema of data/dilemmas/) instead of the bundled ones")
    p = _cmd(sub, "audit", "a neuron's logit-lens tokens and top-activating texts", """
        mechvalue audit --layer 12 --neuron 345
        mechvalue audit --layer 12 --neuron 345 --k 10 --texts my_texts.txt --save audit.json""", [_model_opts()])
    p.add_argument("--layer", type=int, required=True)
    p.add_argument("--neuron", type=int, required=True)
    p.add_argument("--k", type=int, default=5, help="examples to show")
    p.add_argument("--hook", choices=("post", "pre", "pre_linear"), default="post")
    p.add_argument("--texts", default=None, help="text file, one text per line (default: bundled sample)")
    p.add_argument("--n-texts", type=int, default=256, help="size of the bundled sample")
    p.add_argument("--label", default=None)
    p.add_argument("--save", default=None, help="write the audit as JSON")
    p = _cmd(sub, "explain", "explain neurons in words with an LLM (Bills et al. 2023) and score each explanation by "
             "simulation, against random neurons", EXPLAIN_EXAMPLES, [_model_opts()])
    add_explain_opts(p)
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
    p = _cmd(sub, "judge", "score your own texts on the ten values with a judge; one CSV row per text", """
        mechvalue judge --texts answers.txt --out scores.csv            # one text per line
        mechvalue judge --texts answers.jsonl --judge lexicon --out scores.csv   # {"id": ..., "text": ...}
        mechvalue judge --texts a.txt --judge openai --endpoint http://127.0.0.1:8080/v1 --out s.csv""",
             [_model_opts()])
    p.add_argument("--texts", required=True, metavar="FILE", help=".txt (one text per line) or .jsonl with 'text'")
    p.add_argument("--judge", choices=("classifier", "lexicon", "openai"), default="classifier",
                   help="classifier (default: the shipped judge on the model's features), lexicon (pyvalues' "
                        "Personal Values Dictionary, no model) or openai (an OpenAI-compatible endpoint)")
    p.add_argument("--values", default=None, help="comma-separated values (default: all ten)")
    p.add_argument("--endpoint", default=None, help="base URL for --judge openai (default $OPENAI_BASE_URL)")
    p.add_argument("--judge-model", default=None, help="model name for --judge openai ($MECHVALUE_JUDGE_MODEL)")
    p.add_argument("--out", required=True, help="CSV: id, text, one column per value (canonical names)")
    p = _cmd(sub, "patch", "activation patching: which layers, positions, heads or neurons carry a value prompt's "
             "effect on dilemma choices", """
        mechvalue patch --value benevolence --component mlp --out patch_mlp.csv
        mechvalue patch --value power --component resid --max-items 4 --out resid.csv   # layer x position
        mechvalue patch --value BE --source steered --steer-method caa --component heads --out heads.csv""",
             [_model_opts()])
    add_circuit_opts(p, CLI_METHODS)
    p.add_argument("--component", choices=tuple(PATCH_COMPONENTS), default="mlp",
                   help="resid (layer x position), attn, mlp (per layer), heads (layer x head), neurons (--layers)")
    p = _cmd(sub, "attribute", "attribution patching (AtP) or direct logit attribution of every neuron and head", """
        mechvalue attribute --value benevolence --method atp --top 20 --out atp.csv
        mechvalue attribute --value benevolence --method atp --validate 100 --max-items 8 --out atp.csv
        mechvalue attribute --value power --method dla --source prompted --out dla.csv""", [_model_opts()])
    add_circuit_opts(p, CLI_METHODS)
    p.add_argument("--method", choices=("atp", "dla"), default="atp",
                   help="atp: gradient estimate of patching each unit (source into target); dla: direct "
                        "contribution to the preference on the source run")
    p.add_argument("--validate", type=int, default=0, metavar="K",
                   help="also patch the top K and K random neurons exactly and report AtP's rank correlation")
    d = _cmd(sub, "data", "inspect the bundled datasets", "mechvalue data check")
    d.add_argument("action", choices=["check"], help="check: counts, duplicates, context-bias per value")
    _cmd(sub, "info", "show the offline model path, cache folder and package versions", "mechvalue info")
    p = _cmd(sub, "models", "the supported architecture families, the backend each loads with, hooks, the papers' "
             "layers", """
        mechvalue models
        mechvalue models --no-probe --json""")
    p.add_argument("--no-probe", action="store_true",
                   help="print the table without building and loading a tiny model of each family (~1 s each)")
    return parser


# ------------------------------------------------------------------ checks before anything heavy loads

#: numeric flags and the range each must lie in: (low, high, low inclusive, high inclusive); None = unbounded
_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "tau": (0.0, 1.0, False, False), "p0": (0.0, 1.0, False, False), "coefficient": (None, None, True, True),
    "temperature": (0.0, None, True, True), "scale": (None, None, True, True), "threshold": (0.0, 1.0, True, True),
    "batch_size": (1, None, True, True), "seed": (0, None, True, True), "max_new_tokens": (1, None, True, True),
    "max_questions": (1, None, True, True), "max_items": (2, None, True, True), "top": (1, None, True, True),
    "validate": (0, None, True, True), "k": (1, None, True, True),
    "layer": (0, None, True, True), "neuron": (0, None, True, True), "n_texts": (1, None, True, True),
}


def _interval(lo, hi, lo_in, hi_in) -> str:
    if hi is None:
        return f">= {lo}" if lo_in else f"> {lo}"
    return f"in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"


def check_args(args: argparse.Namespace) -> None:
    """Reject NaN, infinite and out-of-range numbers and unknown value names (:class:`UsageError`)."""
    for name, (lo, hi, lo_in, hi_in) in _RANGES.items():
        v = getattr(args, name, None)
        if v is None or isinstance(v, bool):
            continue
        flag = "--" + name.replace("_", "-")
        if not math.isfinite(v):
            raise UsageError(f"{flag} must be a finite number, got {v}")
        below = lo is not None and (v < lo if lo_in else v <= lo)
        above = hi is not None and (v > hi if hi_in else v >= hi)
        if below or above:
            raise UsageError(f"{flag} must be {_interval(lo, hi, lo_in, hi_in)}, got {v}")
    if getattr(args, "value", None) is not None:
        from mechvalue.core.values import canonical

        try:
            args.value = canonical(args.value)
        except MechvalueError as exc:
            raise UsageError(str(exc)) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check; for ``run``, build the :class:`~mechvalue.pipeline.config.RunConfig`
    (``args.run_config``) from the ``--config`` file and the flags given (flags win)."""
    args = build_parser().parse_args(argv)
    check_args(args)
    if args.command != "run":
        return args
    from mechvalue.pipeline.config import RunConfig, load_config_file

    file = load_config_file(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items() if k in RunConfig.fields()}
    args.run_config = RunConfig.build(file, flags, source=args.config or "command line")
    if args.run_config.data:  # the user's files are validated now, before any model loads
        from mechvalue.data.bundled import check_user_data

        try:
            check_user_data(args.run_config.data)
        except MechvalueError as exc:
            raise UsageError(str(exc)) from None
    args.force_step = [s.strip() for s in (args.force_step or "").split(",") if s.strip()]
    bad = [s for s in args.force_step if s not in STEPS]
    if bad:
        raise UsageError(f"--force-step {bad}: unknown step; choose from {', '.join(STEPS)}")
    return args


def _error(exc: BaseException) -> str:
    return "mechvalue: error: " + " ".join(str(exc).split())


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 a usage error (bad flags, config or value names: nothing ran), 1 a runtime
    error (a missing or corrupt file, a model that cannot load, ...), 130 interrupted (resumable)."""
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except MechvalueError as exc:  # nothing has run yet: the command line or config is wrong
        print(_error(exc), file=sys.stderr)
        return 2
    try:
        if args.command == "run" and args.dry_run:
            from mechvalue.cli.families import cmd_dry_run

            cmd_dry_run(args)
        elif args.command == "run":
            from mechvalue.pipeline.run import run_main

            if not args.json:
                run_main(args.run_config, force=args.force_step)
            else:  # the steps' lines go to stderr; stdout gets the finished folder as `show --json` prints it
                with contextlib.redirect_stdout(sys.stderr):
                    out = run_main(args.run_config, force=args.force_step)
                COMMANDS["show"](argparse.Namespace(run_dir=out or args.run_config.out, json=True))
        elif args.command == "data":
            return cmd_data_check(args)
        elif args.command == "models":
            from mechvalue.cli.families import cmd_models

            cmd_models(args)
        elif args.command == "info":
            cmd_info(args)
        elif args.command == "explain":
            from mechvalue.cli.explain import cmd_explain

            cmd_explain(args)
        else:
            COMMANDS[args.command](args)
    except UsageError as exc:
        print(_error(exc), file=sys.stderr)
        return 2
    except MechvalueError as exc:
        print(_error(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mechvalue: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
