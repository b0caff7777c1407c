"""Run the benchmarks (each in its own process) and print one summary table.

Usage: python benchmarks/run_all.py [--quick] [--threads N] [--only collect memory load generate]
       [--results benchmarks/results]

``--quick`` trims repetitions (collect: 64 prompts, 1 rep; load: 1 rep; generate: 1 rep, 16 new
tokens, no what-if arm, short profile) for a smoke run;
the memory benchmark keeps its 200 / 2,000 sizes (its ratio is the point).
Each benchmark writes ``<results>/bench_<name>.json``; the summary goes to
``<results>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

HERE = Path(__file__).resolve().parent
ORDER = ("load", "memory", "collect", "generate", "atp")
METRIC = {"collect": ("ratio_vs_plain_logits", ">="), "memory": ("ratio", "<="), "load": ("ratio", "<="),
          "generate": ("ratio_steer_vs_plain", ">="), "atp": ("atp_seconds", "<=")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--only", nargs="+", choices=ORDER, default=list(ORDER))
    ap.add_argument("--results", default=str(C.RESULTS))
    args = ap.parse_args(argv)
    results = Path(args.results)
    extra = {"collect": ["--prompts", "64", "--reps", "1"], "load": ["--reps", "1"], "memory": [],
             "generate": ["--reps", "1", "--max-new-tokens", "16", "--no-whatif", "--profile-tokens", "4"],
             "atp": ["--items", "8", "--sample", "16"]}
    summary = {"machine": C.machine(), "quick": args.quick, "benchmarks": {}}
    rows = []
    failed = False
    for name in ORDER:
        if name not in args.only:
            continue
        out = results / f"bench_{name}.json"
        cmd = [sys.executable, str(HERE / f"bench_{name}.py"), "--out", str(out)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.quick:
            cmd += extra[name]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            failed = True
            rows.append((name, "error", "", "", "", wall))
            summary["benchmarks"][name] = {"error": proc.returncode, "wall_s": wall}
            continue
        res = json.loads(out.read_text())
        key, op = METRIC[name]
        target = res["target"].get("min", res["target"].get("max"))
        rows.append((name, res["target"]["metric"], res[key], f"{op} {target}", res["verdict"], wall))
        summary["benchmarks"][name] = {"metric": res["target"]["metric"], "ratio": res[key], "target": f"{op} {target}",
                                       "verdict": res["verdict"], "wall_s": wall, "result_file": str(out)}
        failed |= res["verdict"] != "PASS"
    print()
    print(C.table(rows, ["benchmark", "metric", "ratio", "target", "verdict", "wall s"]))
    C.write_json(results / "summary.json", summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
