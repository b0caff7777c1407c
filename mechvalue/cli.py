"""``mechvalue`` command line.

    mechvalue run [--quick] [--out runs/default] [--values benevolence,power]
    mechvalue data check
    mechvalue info

Errors are printed on one line saying what to change; the exit status is 2.
"""

from __future__ import annotations

import argparse
import sys

from .errors import MechvalueError

EXAMPLES = """examples:
  mechvalue run --quick                 # smoke run on the offline default model
  mechvalue run --out runs/smollm2      # full run, resumable in that folder
  mechvalue data check                  # counts, duplicates, context-bias per value
  mechvalue info                        # model and package versions
"""


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="analyse a model's values end to end and write a run folder",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  mechvalue run --quick\n  mechvalue run --values benevolence,power")
    p.add_argument("--model", default=None, help="model name, .gguf path or local folder (default: offline SmolLM2)")
    p.add_argument("--values", default=None, help="comma-separated values (default: all ten)")
    p.add_argument("--out", default="runs/default", help="run folder (reused: finished steps are skipped)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="small smoke run (a few minutes on a CPU)")
    p.add_argument("--batch-size", type=int, default=16)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mechvalue", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    d = sub.add_parser("data", help="inspect the bundled datasets")
    d.add_argument("action", choices=["check"], help="check: counts, duplicates, context-bias per value")
    sub.add_parser("info", help="show the offline model path, cache folder and package versions")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            from .run import run_main

            run_main(args)
        elif args.command == "data":
            from .data import check_data

            df = check_data()
            import pandas as pd

            with pd.option_context("display.width", 200, "display.max_columns", 20):
                print(df.drop(columns=["bias_positive_only", "bias_negative_only"]).to_string(index=False))
            bad = df[df.context_bias > 0.5]
            if len(bad):
                print(f"context-bias above 0.5 for: {', '.join(bad.value)}", file=sys.stderr)
                return 1
        elif args.command == "info":
            from ._io import package_versions
            from .models import default_cache_dir, offline_gguf_path

            print(f"offline model: {offline_gguf_path()}\ncache: {default_cache_dir()}")
            for k, v in package_versions().items():
                print(f"{k}: {v}")
    except MechvalueError as exc:
        print(f"mechvalue: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mechvalue: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
