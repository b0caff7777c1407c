"""Attribution patching of every MLP neuron vs exact patching of the same neurons, on the same dilemmas.

Target (project issue): AtP for all neurons of SmolLM2 on 40 dilemmas in under 2 minutes on 2 cores, reported as
the ratio of AtP's time to the time exact patching of every neuron would take.

Method: the benevolence dilemmas under a benevolence system prompt (source) vs the default (target), aligned on the
shared suffix. ``atp``: :func:`mechvalue.methods.patching.attribution_patching` over ``--items`` dilemmas (all
30 x 1,536 neurons and all heads). ``exact``: :func:`patch_sweep` of ``--sample`` neurons of one layer on
``--exact-items`` of the same dilemmas (batched copies, as the sweep runs), per neuron and item; the exact time
of all neurons on all items is that rate times ``neurons x items``. The two arms alternate for ``--reps``
repetitions; medians are reported. Ratio = exact (extrapolated) / AtP: how many times faster AtP is.

Usage: python benchmarks/bench_atp.py [--items 40] [--exact-items 2] [--sample 64] [--reps 1] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

TARGET_S = 120.0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--exact-items", type=int, default=2)
    ap.add_argument("--sample", type=int, default=64)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(C.default_out("bench_atp")))
    args = ap.parse_args(argv)
    threads = C.set_threads(args.threads)
    machine = C.machine()
    load_warning = C.warn_if_loaded(machine["cores"])

    import mechvalue as mv
    from mechvalue.methods import patching

    model = mv.load_model()
    system = mv.load_system_prompts("benevolence")[0].text
    items = patching.dilemma_items(model, mv.load_dilemmas("benevolence")[:args.items], source_system=system,
                                   target_system=None)
    layer = model.cfg.n_layers // 2
    sample = {layer: list(range(args.sample))}
    n_neurons = model.cfg.n_layers * model.cfg.d_mlp
    atp_s, exact_rate = [], []
    for _ in range(args.reps):
        t = time.perf_counter()
        patching.attribution_patching(model, items, progress=False)
        atp_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        patching.patch_sweep(model, items[:args.exact_items], "neurons", layers=[layer], neurons=sample,
                             progress=False)
        exact_rate.append((time.perf_counter() - t) / (args.sample * len(items[:args.exact_items])))
    atp, rate = C.median(atp_s), C.median(exact_rate)
    exact_all = rate * n_neurons * len(items)
    ratio = exact_all / atp
    result = {"benchmark": "atp", "items": len(items), "neurons": n_neurons, "threads": threads,
              "atp_seconds": atp, "exact_seconds_per_neuron_item": rate, "exact_all_seconds_extrapolated": exact_all,
              "speedup_exact_over_atp": ratio,
              "target": {"metric": "atp_seconds (all neurons, all items)", "max": TARGET_S},
              "verdict": C.verdict(atp, TARGET_S, higher_is_better=False), "machine": machine,
              "load_warning": load_warning}
    print(C.table([["AtP, all neurons and heads", f"{atp:.1f} s", f"<= {TARGET_S:.0f} s", result["verdict"]],
                   ["exact patching of all neurons (extrapolated)", f"{exact_all:.0f} s", "", ""],
                   ["speed-up exact / AtP", f"{ratio:.0f}x", "", ""]], ["arm", "time", "target", "verdict"]))
    print(f"wrote {C.write_json(args.out, result)}")
    return result


if __name__ == "__main__":
    main()
