"""Cached model load time vs first (uncached) load time.

Target (project issue): ``load_model()`` from the converted-weights cache takes <= 0.2 x
the time of the first load (GGUF decode + dequantization + TransformerLens conversion +
writing the cache).

Method: for each repetition, a new empty temporary cache folder; one fresh subprocess
loads with ``load_model(device="cpu", cache_dir=tmp)`` (first load: builds the cache),
then a second fresh subprocess loads again from that folder (cached). Only the
``load_model`` call is timed (imports of torch / transformer_lens are reported
separately: they are the same in both and not part of loading). Ratio = median cached /
median first. The cached child also checks that it really hit the cache (no GGUF decode:
the folder's files are not rewritten).

Usage: python benchmarks/bench_load.py [--reps 3] [--threads N]
       [--out benchmarks/results/bench_load.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

TARGET = 0.2
MARK = "BENCH_LOAD_RESULT "


def child(cache_dir: str, threads: int | None) -> dict:
    t0 = time.perf_counter()
    import torch  # noqa: F401
    import transformer_lens  # noqa: F401

    import mechvalue.lm.models as M

    C.set_threads(threads)
    import_s = time.perf_counter() - t0
    before = {p: p.stat().st_mtime_ns for p in Path(cache_dir).rglob("*") if p.is_file()}
    t0 = time.perf_counter()
    model = M.load_model(device="cpu", cache_dir=cache_dir)
    load_s = time.perf_counter() - t0
    after = {p: p.stat().st_mtime_ns for p in Path(cache_dir).rglob("*") if p.is_file()}
    cache_bytes = sum(p.stat().st_size for p in after)
    return {"load_s": load_s, "import_s": import_s, "cache_existed": bool(before),
            "cache_rewritten": bool(before) and before != after, "cache_bytes": cache_bytes,
            "n_layers": model.cfg.n_layers}


def run_child(cache_dir: str, threads: int | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", cache_dir]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("MECHVALUE_CACHE", None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"load child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    res = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)][-1][len(MARK):])
    res["process_wall_s"] = wall
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(C.default_out("bench_load")))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(MARK + json.dumps(child(args.child, args.threads)), flush=True)
        return {}

    t_start = time.perf_counter()
    machine = C.machine()
    machine["torch_threads"] = args.threads or C.cpu_count()
    load_warning = C.warn_if_loaded(machine["cores"])
    first, cached = [], []
    for rep in range(args.reps):
        with tempfile.TemporaryDirectory(prefix="mechvalue-bench-load-") as tmp:
            f = run_child(tmp, args.threads)
            c = run_child(tmp, args.threads)
        assert not f["cache_existed"] and c["cache_existed"] and not c["cache_rewritten"], (f, c)
        first.append(f)
        cached.append(c)
        print(f"rep {rep + 1}/{args.reps}: first {f['load_s']:.2f}s, cached {c['load_s']:.2f}s",
              file=sys.stderr, flush=True)
    med_first = C.median([r["load_s"] for r in first])
    med_cached = C.median([r["load_s"] for r in cached])
    ratio = med_cached / med_first
    res = {
        "benchmark": "bench_load",
        "target": {"metric": "cached load_model() time / first load_model() time", "max": TARGET},
        "ratio": ratio,
        "verdict": C.verdict(ratio, TARGET, False),
        "ratio_per_rep": [c["load_s"] / f["load_s"] for f, c in zip(first, cached)],
        "median_first_s": med_first,
        "median_cached_s": med_cached,
        "median_import_s": C.median([r["import_s"] for r in first + cached]),
        "ratio_including_imports": (C.median([r["process_wall_s"] for r in cached])
                                    / C.median([r["process_wall_s"] for r in first])),
        "cache_mib": first[0]["cache_bytes"] / 2**20,
        "first": first,
        "cached": cached,
        "settings": {"reps": args.reps, "model": "SmolLM2-135M-Instruct (offline GGUF -> float32, cpu)",
                     "processing": "none"},
        "machine": machine,
        "load_warning": load_warning,
    }
    res["wall_s"] = time.perf_counter() - t_start
    out = C.write_json(args.out, res)
    rows = [("first (empty cache)", med_first, C.median([r["process_wall_s"] for r in first])),
            ("cached", med_cached, C.median([r["process_wall_s"] for r in cached]))]
    print(C.table(rows, ["load", "median load_model s", "median process wall s"]))
    print(f"\ncached / first = {ratio:.3f}  (target <= {TARGET}: {res['verdict']}); per rep "
          + ", ".join(f"{x:.3f}" for x in res["ratio_per_rep"])
          + f"; with imports and process start {res['ratio_including_imports']:.3f}")
    print(f"cache size {res['cache_mib']:.0f} MiB; imports {res['median_import_s']:.1f}s; "
          f"wall {res['wall_s']:.0f}s -> {out}")
    return res


if __name__ == "__main__":
    main()
