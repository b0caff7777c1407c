"""Peak memory of collection over many prompts vs few prompts.

Target (project issue): peak memory of ``collect`` over 2,000 prompts <= 1.15 x the peak
over 200 prompts (statistics are streaming accumulators, so memory should not grow with
the dataset).

Method: one fresh subprocess per size (sizes interleaved when repeated). In the child:
load the model (from the on-disk cache), build the prompts, ``gc.collect()`` and
``malloc_trim(0)`` (free heap goes back to the OS), record the RSS as the baseline,
reset the kernel's peak-RSS counter (``/proc/self/clear_refs`` = 5, which also resets
``ru_maxrss``), run ``collect``, then read the peak (``VmHWM``). The reported number is
the peak RSS *growth* over that post-load baseline; torch allocations are visible to RSS
(tracemalloc would not see them). A ``psutil`` sampler thread (5 ms) gives a second
estimate where ``clear_refs`` is not available, and also samples anonymous RSS
(``RssAnon``: without file-backed pages, which the kernel may drop or add for reasons
unrelated to collection).

Allocator: glibc's *dynamic* mmap threshold makes the high-water mark depend on the
allocation history (the same 200 prompts measured 79 MiB, and 2,000 repeats of them 51
MiB). The verdict therefore uses children started with ``MALLOC_MMAP_THRESHOLD_=131072``
(fixed threshold: freed activation buffers leave RSS at once, so RSS follows live
memory); ``--malloc default`` or ``both`` measures the default allocator too.

Prompts: a deterministic sequence alternating intrinsic chat prompts and prompts with a
value system prompt, cycling the bundled queries; the 200-prompt run uses the first 200
of the same sequence (``--set repeat`` instead cycles those 200 up to 2,000, so both sizes
see identical batch shapes). Span ``"prompt"`` (the default), residual + MLP statistics.
To keep the runtime short on 2 CPU cores the default collects layers 0-1
(``stop_at_layer=2``: the forward stops after block 1; the per-batch transient peak is
one block's activations, the same in every block); ``--layers all`` runs every block
(about 15x slower). Children use 1 torch thread unless ``--threads`` says otherwise.

Usage: python benchmarks/bench_memory.py [--sizes 200 2000] [--layers 0-1] [--reps 3]
       [--malloc fixed|default|both] [--set distinct|repeat] [--threads 1]
       [--out benchmarks/results/bench_memory.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

TARGET = 1.15
MARK = "BENCH_MEMORY_RESULT "


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_bytes() -> int:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    import psutil

    return psutil.Process().memory_info().rss


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> bool:
    """Hand free heap memory back to the OS so the baseline RSS is live memory (glibc only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


class _Sampler(threading.Thread):
    """Polls RSS (and anonymous RSS, i.e. without file-backed pages) every ``interval`` seconds."""

    def __init__(self, interval: float = 0.005):
        super().__init__(daemon=True)
        self.interval, self.peak, self.peak_anon, self._halt = interval, 0, 0, threading.Event()
        try:
            import psutil

            self._proc = psutil.Process()
        except ImportError:
            self._proc = None

    def run(self):
        while not self._halt.is_set():
            rss = self._proc.memory_info().rss if self._proc else _rss_bytes()
            self.peak = max(self.peak, rss)
            self.peak_anon = max(self.peak_anon, (_status_kb("RssAnon") or 0) * 1024)
            self._halt.wait(self.interval)

    def stop(self) -> tuple[int, int]:
        self._halt.set()
        self.join()
        return self.peak, self.peak_anon


def child(n: int, layers_spec: str, batch_size: int, threads: int | None, prompt_set: str, small: int) -> dict:
    import torch

    C.set_threads(threads)
    from mechvalue.lm.collect import collect
    from mechvalue.lm.models import load_model
    from mechvalue.lm.prompts import iter_batches

    t0 = time.perf_counter()
    model = load_model(device="cpu")
    load_s = time.perf_counter() - t0
    layers = C.parse_layers(layers_spec, model.cfg.n_layers)
    if prompt_set == "distinct":
        examples = C.chat_examples(n, mode="cycle")
    else:  # the first `small` prompts, repeated: every size sees the same batch shapes
        base = C.chat_examples(small, mode="cycle")
        examples = [base[i % small] for i in range(n)]
    widths = [b.tokens.shape[1] for b in iter_batches(model.tokenizer, examples, batch_size)]
    with torch.inference_mode():  # one tiny forward so lazy one-time allocations precede the baseline
        model(torch.tensor([[1, 2, 3]]), return_type=None, stop_at_layer=1)
    gc.collect()
    trimmed = _malloc_trim()
    baseline = _rss_bytes()
    baseline_anon = (_status_kb("RssAnon") or 0) * 1024
    reset_ok = _reset_peak()
    sampler = _Sampler()
    sampler.start()
    t0 = time.perf_counter()
    stats = collect(model, examples, layers=layers, batch_size=batch_size, progress=False)
    collect_s = time.perf_counter() - t0
    sampled_peak, sampled_anon = sampler.stop()
    hwm = _status_kb("VmHWM")
    hwm = hwm * 1024 if hwm is not None else None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    if reset_ok and hwm is not None:
        peak, method = hwm, "VmHWM after clear_refs reset"
    else:
        peak, method = sampled_peak, "psutil sampler (5 ms)"
    return {"n": n, "layers": layers_spec, "baseline_rss": baseline, "peak_rss": peak,
            "peak_growth": peak - baseline, "method": method, "sampled_peak_growth": sampled_peak - baseline,
            "sampled_anon_peak_growth": sampled_anon - baseline_anon, "malloc_trim_before_baseline": trimmed,
            "ru_maxrss_growth": (maxrss - baseline) if reset_ok else None,
            "after_rss_growth": _rss_bytes() - baseline, "collect_s": collect_s, "load_s": load_s,
            "n_tokens": stats.n_tokens, "n_examples": stats.n_examples, "n_batches": len(widths),
            "max_width": max(widths), "padded_tokens": sum(w * batch_size for w in widths)}


MALLOC = {  # glibc: a fixed mmap threshold turns off its dynamic threshold, so freed tensors leave RSS at once
    "fixed": {"MALLOC_MMAP_THRESHOLD_": "131072"},
    "default": {},
}


def run_child(n: int, args, malloc: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n), "--layers", args.layers,
           "--batch-size", str(args.batch_size), "--set", args.set, "--small", str(args.sizes[0])]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX"):
        env.pop(k, None)
    env.update(MALLOC[malloc])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"child for n={n} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)][-1]
    res = json.loads(line[len(MARK):])
    res["child_wall_s"] = wall
    res["malloc"] = malloc
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[200, 2000], metavar=("SMALL", "LARGE"))
    ap.add_argument("--layers", default="0-1", help="layers collected: 0-1 (default), all, 0-2, 0,5,9")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3, help="subprocesses per size and allocator setting (interleaved)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads in the children (default 1: bounded runtime on a shared 2-core box; "
                    "memory ratios do not depend on it)")
    ap.add_argument("--malloc", choices=("fixed", "default", "both"), default="fixed",
                    help="fixed (default): glibc mmap threshold fixed at 128 KiB (RSS follows live memory; the "
                    "verdict's measure); default: glibc's dynamic threshold (what a user gets; noisier); both")
    ap.add_argument("--set", choices=("distinct", "repeat"), default="distinct",
                    help="distinct: prefixes of one long prompt sequence (default); repeat: the small set "
                    "cycled to the large size (identical batch shapes: isolates growth with dataset size)")
    ap.add_argument("--out", default=str(C.default_out("bench_memory")))
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--small", type=int, default=200, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        res = child(args.child, args.layers, args.batch_size, args.threads, args.set, args.small)
        print(MARK + json.dumps(res), flush=True)
        return {}

    t_start = time.perf_counter()
    machine = C.machine()
    machine["torch_threads"] = args.threads or C.cpu_count()
    load_warning = C.warn_if_loaded(machine["cores"])
    small, large = args.sizes
    modes = ["fixed", "default"] if args.malloc == "both" else [args.malloc]
    runs = {m: {small: [], large: []} for m in modes}
    for rep in range(args.reps):
        for m in modes:
            for n in ((small, large) if rep % 2 == 0 else (large, small)):
                r = run_child(n, args, m)
                runs[m][n].append(r)
                print(f"malloc {m}, n={n}: peak growth {r['peak_growth'] / 2**20:.1f} MiB over "
                      f"{r['baseline_rss'] / 2**20:.0f} MiB baseline, collect {r['collect_s']:.1f}s",
                      file=sys.stderr, flush=True)
    summary = {}
    for m in modes:
        growth = {n: C.median([r["peak_growth"] for r in runs[m][n]]) for n in (small, large)}
        peak = {n: C.median([r["peak_rss"] for r in runs[m][n]]) for n in (small, large)}
        anon = {n: C.median([r["sampled_anon_peak_growth"] for r in runs[m][n]]) for n in (small, large)}
        summary[m] = {"ratio": growth[large] / growth[small], "ratio_total_peak_rss": peak[large] / peak[small],
                      "ratio_sampled_anon": anon[large] / anon[small],
                      "peak_growth_mib": {str(n): growth[n] / 2**20 for n in growth}}
    primary = modes[0]
    ratio = summary[primary]["ratio"]
    res = {
        "benchmark": "bench_memory",
        "target": {"metric": f"peak RSS growth of collect, {large} / {small} prompts", "max": TARGET},
        "ratio": ratio,
        "verdict": C.verdict(ratio, TARGET, False),
        "ratio_malloc": primary,
        "by_malloc": summary,
        "settings": {"sizes": [small, large], "layers": args.layers, "span": "prompt", "resid": True, "mlp": True,
                     "batch_size": args.batch_size, "reps": args.reps, "prompt_set": args.set,
                     "malloc": {m: MALLOC[m] for m in modes}},
        "runs": {m: {str(n): v for n, v in runs[m].items()} for m in modes},
        "machine": machine,
        "load_warning": load_warning,
    }
    res["wall_s"] = time.perf_counter() - t_start
    out = C.write_json(args.out, res)
    rows = []
    for m in modes:
        for n in (small, large):
            r = runs[m][n][0]
            rows.append((m, n, r["n_tokens"], r["max_width"], r["baseline_rss"] / 2**20,
                         summary[m]["peak_growth_mib"][str(n)], r["sampled_anon_peak_growth"] / 2**20,
                         r["after_rss_growth"] / 2**20, r["collect_s"]))
    print(C.table(rows, ["malloc", "prompts", "read tokens", "max width", "baseline MiB", "peak growth MiB",
                         "anon (sampled) MiB", "growth after MiB", "collect s"]))
    print()
    for m in modes:
        s = summary[m]
        print(f"malloc {m:7s}: peak growth {large} / {small} = {s['ratio']:.3f}"
              + (f"  (target <= {TARGET}: {res['verdict']})" if m == primary else "")
              + f"; sampled anonymous RSS {s['ratio_sampled_anon']:.3f}"
              + f"; total peak RSS {s['ratio_total_peak_rss']:.3f}")
    print(f"prompt set {args.set}, layers {args.layers}, span prompt, batch {args.batch_size}, "
          f"method: {runs[primary][small][0]['method']}; wall {res['wall_s']:.0f}s -> {out}")
    return res


if __name__ == "__main__":
    main()
