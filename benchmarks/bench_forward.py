"""Batched scoring and collection throughput against a plain Hugging Face forward on the same weights.

Target (project issue: fast steered generation): ``score`` (continuation log-probs: dilemmas, MMLU)
and ``collect`` (residual means + MLP statistics, all layers) each run at >= 0.9 x the throughput
of a plain HF forward over the same token batches.

Method:
- N chat prompts from the bundled queries (``_common.chat_examples``, half with a value system
  prompt), each with K = 2 candidate continuations (the dilemma shape); batches of B rows,
  tokenized once by ``mechvalue.lm.prompts.tokenize`` exactly as ``score``/``collect`` do; the HF
  model is the same GGUF file loaded by ``transformers`` (float32);
- arms (``torch.inference_mode``, one torch thread, each arm the whole workload):
  ``mv_score``   = ``score(model, prompts, continuations, batch_size=B)`` (tokenization included);
  ``hf_score``   = ``hf(tokens, attention_mask).logits`` on the same batches, then the same
                   log-softmax and gather (what an HF user writes);
  ``mv_collect`` = ``collect(model, prompts, batch_size=B, max_tokens=None)``;
  ``hf_forward`` = ``hf(tokens, attention_mask).logits`` on the prompt batches;
  ``hf_body``    = ``hf.model(tokens, attention_mask)`` (no LM head): the stricter reference,
                   since neither ``score`` nor ``collect`` unembeds every position;
- repetitions run the arms back to back in a rotating order; medians of process CPU time;
  throughput ratio = reference time / mechvalue time (same tokens in both).

Usage: python benchmarks/bench_forward.py [--prompts 32] [--batch-size 16] [--reps 3] [--threads 1]
       [--backend hooked] [--out benchmarks/results/bench_forward.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

TARGET = 0.9
CONTINUATIONS = ["I would choose the first option, because it keeps my promise to my friend.", "No."]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", choices=("hooked", "bridge"), default="hooked")
    ap.add_argument("--out", default=str(C.default_out("bench_forward")))
    args = ap.parse_args(argv)
    threads = C.set_threads(args.threads)

    import torch
    from transformers import AutoModelForCausalLM

    from mechvalue.lm.collect import collect
    from mechvalue.lm.generation import score
    from mechvalue.lm.models import load_model, offline_gguf_path
    from mechvalue.lm.prompts import Example, tokenize

    path = offline_gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    model = load_model(backend=args.backend)
    prompts = C.chat_examples(args.prompts)
    conts = [list(CONTINUATIONS) for _ in prompts]
    flat = [Example(e.user, e.system, c, e.raw) for e, cs in zip(prompts, conts) for c in cs]
    b = args.batch_size
    score_batches = [tokenize(model.tokenizer, flat[i:i + b], span="response", skip_special=False,
                              padding_side="right") for i in range(0, len(flat), b)]
    prompt_batches = [tokenize(model.tokenizer, prompts[i:i + b], span="prompt", skip_special=True,
                               padding_side="right") for i in range(0, len(prompts), b)]

    def hf_score():
        out = []
        for batch in score_batches:
            logits = hf(batch.tokens, attention_mask=batch.attention_mask).logits[:, :-1]
            logp = torch.log_softmax(logits.float(), -1).gather(-1, batch.tokens[:, 1:, None])[..., 0]
            out.append((logp * batch.read_mask[:, 1:]).sum(1))
        return torch.cat(out).reshape(len(prompts), len(CONTINUATIONS))

    arms = {
        "mv_score": lambda: score(model, prompts, conts, batch_size=b),
        "hf_score": hf_score,
        "mv_collect": lambda: collect(model, prompts, batch_size=b, max_tokens=None, progress=False),
        "hf_forward": lambda: [hf(x.tokens, attention_mask=x.attention_mask).logits for x in prompt_batches],
        "hf_body": lambda: [hf.model(x.tokens, attention_mask=x.attention_mask) for x in prompt_batches],
    }
    times = {k: [] for k in arms}
    with torch.inference_mode():
        agree = float((arms["mv_score"]() - hf_score()).abs().max())  # also the warm-up
        for r in range(args.reps):
            names = list(arms)
            for name in names[r % len(names):] + names[:r % len(names)]:
                t0 = time.process_time()
                arms[name]()
                times[name].append(time.process_time() - t0)
                print(f"rep {r + 1}/{args.reps} {name}: cpu {times[name][-1]:.2f}s", flush=True)
    med = {k: C.median(v) for k, v in times.items()}
    ratios = {"score_vs_hf_forward": med["hf_score"] / med["mv_score"],
              "collect_vs_hf_forward": med["hf_forward"] / med["mv_collect"],
              "collect_vs_hf_body": med["hf_body"] / med["mv_collect"]}
    result = {
        "benchmark": "bench_forward",
        "target": {"metric": "throughput of mechvalue score / collect vs a plain HF forward (CPU time)",
                   "min": TARGET},
        "ratios": ratios,
        "verdict": C.verdict(min(ratios["score_vs_hf_forward"], ratios["collect_vs_hf_forward"]), TARGET, True),
        "score_max_abs_diff_vs_hf_nats": agree,
        "median_cpu_s": med, "cpu_s_per_rep": times,
        "workload": {"prompts": len(prompts), "continuations_per_prompt": len(CONTINUATIONS), "batch_size": b,
                     "score_tokens": int(sum(x.attention_mask.sum() for x in score_batches)),
                     "prompt_tokens": int(sum(x.attention_mask.sum() for x in prompt_batches))},
        "backend": args.backend, "threads": threads, "machine": C.machine(),
    }
    for k, v in ratios.items():
        print(f"{k} = {v:.3f}")
    print(f"score agrees with HF log-probs to {agree:.2e} nats; verdict {result['verdict']} -> {args.out}")
    C.write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
