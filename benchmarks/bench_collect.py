"""Collection throughput vs plain forward throughput, on the same tokenized batches.

Target (project issue): ``collect`` with residual means and MLP statistics for all layers
runs at >= 0.85 x the throughput of a plain ``model(tokens)`` on the same batches.

Method:
- build N chat prompts from the bundled queries, half intrinsic and half with a value
  system prompt; tokenize them once with ``mechvalue.lm.prompts.iter_batches`` (batch size B);
- variants, all under ``torch.inference_mode``:
  ``plain_logits`` = ``model(tokens)`` (full logits, the issue's reference);
  ``plain_none``   = ``model(tokens, return_type=None)`` (no unembedding: the forward
  ``collect`` itself runs, reported for honesty);
  ``collect``      = ``mechvalue.lm.collect.collect`` on exactly the examples of that batch
  (it re-tokenizes them, so tokenization, hook registration and accumulation are
  included; its batch has the same shape, which is checked);
- warm up each variant, then for each repetition and each batch run the variants
  back to back in a rotating order (interleaving spreads drift and noise from other
  processes evenly); per-variant pass time = sum over batches; report medians over
  repetitions, and the median of per-batch ratios as a second, robust estimate;
- throughput = real (non-padding) tokens / second; every variant sees the same tokens, so
  a throughput ratio is the inverse time ratio.

Also reported (cheap diagnostics): time of the statistics hooks alone on random
activations of the same shapes, hook install/remove overhead, tokenization time, padding
waste of the current length sort vs an exact token-length sort.

Usage: python benchmarks/bench_collect.py [--prompts 256] [--batch-size 16] [--reps 3]
       [--threads N] [--out benchmarks/results/bench_collect.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

TARGET = 0.85
VARIANTS = ("plain_logits", "plain_none", "collect")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--layers", default="all", help="layers collected: all (default), 0-14, 0,5,9")
    ap.add_argument("--out", default=str(C.default_out("bench_collect")))
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    import torch

    threads = C.set_threads(args.threads)
    from mechvalue.core.hooks import mlp_hook, resid_hook
    from mechvalue.lm.collect import _Accumulator, collect
    from mechvalue.lm.models import load_model
    from mechvalue.lm.prompts import encode, iter_batches

    machine = C.machine()
    machine["torch_threads"] = threads
    load_warning = C.warn_if_loaded(machine["cores"])

    model = load_model(device="cpu")
    tok = model.tokenizer
    layers = C.parse_layers(args.layers, model.cfg.n_layers)
    layer_list = layers if layers is not None else list(range(model.cfg.n_layers))
    examples = C.chat_examples(args.prompts, mode="half")

    t = time.perf_counter()
    batches = list(iter_batches(tok, examples, args.batch_size))
    tokenize_s = time.perf_counter() - t
    chunks = [[examples[i] for i in b.index.tolist()] for b in batches]
    for b, ch in zip(batches, chunks):  # collect re-batches a chunk: it must get the same shape
        (again,) = list(iter_batches(tok, ch, args.batch_size))
        assert again.tokens.shape == b.tokens.shape and torch.equal(again.tokens.sum(0), b.tokens.sum(0))
    real_tokens = sum(int(b.attention_mask.sum()) for b in batches)
    padded_tokens = sum(b.tokens.numel() for b in batches)

    def run(variant: str, k: int) -> float:
        t0 = time.perf_counter()
        if variant == "collect":
            collect(model, chunks[k], layers=layers, batch_size=args.batch_size, progress=False)
        else:
            with torch.inference_mode():
                if variant == "plain_logits":
                    model(batches[k].tokens)
                else:
                    model(batches[k].tokens, return_type=None)
        return time.perf_counter() - t0

    # warm-up: smallest and widest batch, every variant
    widest = max(range(len(batches)), key=lambda k: batches[k].tokens.shape[1])
    for k in {0, widest}:
        for v in VARIANTS:
            run(v, k)

    times = {v: [[0.0] * len(batches) for _ in range(args.reps)] for v in VARIANTS}
    for rep in range(args.reps):
        for k in range(len(batches)):
            shift = (rep + k) % len(VARIANTS)
            for v in VARIANTS[shift:] + VARIANTS[:shift]:
                times[v][rep][k] = run(v, k)
        print(f"rep {rep + 1}/{args.reps}: " + ", ".join(f"{v} {sum(times[v][rep]):.1f}s" for v in VARIANTS),
              file=sys.stderr, flush=True)

    pass_s = {v: [sum(r) for r in times[v]] for v in VARIANTS}
    med_pass = {v: C.median(pass_s[v]) for v in VARIANTS}
    tput = {v: real_tokens / med_pass[v] for v in VARIANTS}
    per_rep_ratio = {ref: [pass_s[ref][r] / pass_s["collect"][r] for r in range(args.reps)]
                     for ref in ("plain_logits", "plain_none")}
    per_batch_ratio = {ref: C.median([times[ref][r][k] / times["collect"][r][k]
                                      for r in range(args.reps) for k in range(len(batches))])
                       for ref in ("plain_logits", "plain_none")}
    ratio = {ref: tput["collect"] / tput[ref] for ref in ("plain_logits", "plain_none")}

    # ---- diagnostics -------------------------------------------------------------------
    cfg = model.cfg
    acc = _Accumulator(layer_list, cfg.d_model, cfg.d_mlp, True, True, {}, "cpu")
    gen = torch.Generator().manual_seed(0)
    hook_s = 0.0
    with torch.inference_mode():
        for b in batches:
            bsz, pos = b.tokens.shape
            resid = torch.randn(bsz, pos, cfg.d_model, generator=gen)
            pre = torch.randn(bsz, pos, cfg.d_mlp, generator=gen)
            post = torch.randn(bsz, pos, cfg.d_mlp, generator=gen)
            acc.start(b)
            t0 = time.perf_counter()
            for layer in layer_list:
                acc.resid_hook(layer)(resid, None)
                acc.pre_hook(layer)(pre, None)
                acc.post_hook(layer)(post, None)
            hook_s += time.perf_counter() - t0
    hooks = []
    for layer in layer_list:
        hooks += [(resid_hook(layer), lambda a, hook: None), (mlp_hook(layer, "hook_pre"), lambda a, hook: None),
                  (mlp_hook(layer, "hook_post"), lambda a, hook: None)]
    t0 = time.perf_counter()
    for _ in range(20):
        with model.hooks(fwd_hooks=hooks):
            pass
    hook_install_s = (time.perf_counter() - t0) / 20 * len(batches)

    lens = [sum(map(len, encode(tok, ex))) for ex in examples]
    order = sorted(range(len(examples)), key=lambda i: lens[i])
    padded_token_sort = sum(max(lens[i] for i in order[s:s + args.batch_size]) * len(order[s:s + args.batch_size])
                            for s in range(0, len(order), args.batch_size))

    res = {
        "benchmark": "bench_collect",
        "target": {"metric": "collect throughput / plain_logits throughput", "min": TARGET},
        "ratio_vs_plain_logits": ratio["plain_logits"],
        "ratio_vs_plain_none": ratio["plain_none"],
        "verdict": C.verdict(ratio["plain_logits"], TARGET, True),
        "ratio_per_rep": per_rep_ratio,
        "ratio_median_per_batch": per_batch_ratio,
        "median_pass_s": med_pass,
        "pass_s": pass_s,
        "tokens_per_s": tput,
        "settings": {"prompts": args.prompts, "batch_size": args.batch_size, "reps": args.reps,
                     "layers": "all" if layers is None else layers, "span": "prompt", "resid": True, "mlp": True,
                     "n_batches": len(batches), "model": "SmolLM2-135M-Instruct (offline GGUF, float32, cpu)"},
        "tokens": {"real": real_tokens, "padded": padded_tokens,
                   "padding_waste": 1 - real_tokens / padded_tokens,
                   "padded_if_sorted_by_token_length": padded_token_sort,
                   "widths": [int(b.tokens.shape[1]) for b in batches]},
        "diagnostics": {
            "stat_hooks_only_s_per_pass": hook_s,
            "stat_hooks_share_of_collect": hook_s / med_pass["collect"],
            "hook_install_remove_s_per_pass": hook_install_s,
            "tokenize_s_per_pass": tokenize_s,
            "unembed_share_of_plain_logits": 1 - med_pass["plain_none"] / med_pass["plain_logits"],
        },
        "machine": machine,
        "load_warning": load_warning,
        "wall_s": None,
    }
    res["wall_s"] = time.perf_counter() - t_start
    out = C.write_json(args.out, res)

    rows = [(v, med_pass[v], tput[v], tput["collect"] / tput[v]) for v in VARIANTS]
    print(C.table(rows, ["variant", "median s/pass", "tokens/s", "collect/variant"]))
    print(f"\ncollect / plain model(tokens)           = {ratio['plain_logits']:.3f}  (target >= {TARGET}: "
          f"{res['verdict']}; per-batch median {per_batch_ratio['plain_logits']:.3f})")
    print(f"collect / model(tokens, return_type=None) = {ratio['plain_none']:.3f}  "
          f"(per-batch median {per_batch_ratio['plain_none']:.3f})")
    d = res["diagnostics"]
    print(f"stat hooks alone: {d['stat_hooks_only_s_per_pass']:.2f}s/pass "
          f"({100 * d['stat_hooks_share_of_collect']:.1f}% of collect); hook install/remove "
          f"{d['hook_install_remove_s_per_pass'] * 1e3:.1f} ms/pass; tokenize {tokenize_s:.2f}s/pass")
    print(f"padding: {padded_tokens} positions for {real_tokens} real tokens "
          f"({100 * res['tokens']['padding_waste']:.1f}% waste); sorted by token length: {padded_token_sort}")
    print(f"{args.prompts} prompts, batch {args.batch_size}, {args.reps} reps, {threads} threads; "
          f"wall {res['wall_s']:.0f}s -> {out}")
    return res


if __name__ == "__main__":
    main()
