"""Steered generation throughput: mechvalue ``generate`` with an ``AddVector`` vs without, and vs HF ``generate``.

Targets (project issue: intervention engine):
1. ``generate`` with one ``AddVector`` at a middle layer runs at >= 0.9 x the throughput of
   the same call without interventions (batch 16, 64 new tokens, greedy);
2. reported, no target: mechvalue's steered generation / Hugging Face ``generate`` on the
   same GGUF-loaded model with an equivalent PyTorch forward hook adding the same vector to
   the output of ``model.model.layers[L]`` (the steering-vectors / repeng recipe).

Method:
- B chat prompts from the bundled queries (``_common.chat_examples``: half intrinsic, half
  with a value system prompt), one batch, left padded; the HF tokenizer (from the same GGUF,
  ``padding_side="left"``) must give exactly mechvalue's token ids (checked);
- arms, each a full call including chat templating and tokenization, greedy:
  ``mv_plain``   = ``generate(model, prompts, max_new_tokens=N)``;
  ``mv_steer``   = the same with ``AddVector(L, v, alpha)`` (v random, norm ``--norm``);
  ``hf_steer``   = ``AutoModelForCausalLM.from_pretrained(gguf).generate(min_new_tokens=N,
                   max_new_tokens=N)`` with ``register_forward_hook`` on ``model.model.layers[L]``
                   adding ``alpha * v`` (registered and removed per call, as ``intervene`` does);
  ``mv_steer_whatif`` (unless ``--no-whatif``) = ``mv_steer`` on a copy of the model with two
                   fixes applied from outside (the package is untouched): weights re-strided to
                   the ``nn.Linear`` layout so TransformerLens' per-call ``W.T.contiguous()``
                   copies become no-ops (values unchanged, outputs bit-identical) and
                   last-position-only logits in the prompt pass (see the README);
- equal work: HF cannot stop early (``min_new_tokens``); mechvalue keeps stepping the whole
  batch until every row is done, so its work is B x (decode steps), steps = the longest row.
  Throughput = B x steps / time; the steps of every arm are recorded and compared
  (``equal_work``), and the real generated token counts (EOS included) are reported too;
- time base: process CPU time (``time.process_time``, 1 torch thread by default) for the
  primary ratios, because on a shared, oversubscribed CPU it counts only the time this process
  ran; wall-time ratios are reported next to them;
- warm up every arm on a tiny call, then per repetition run the arms back to back in a
  rotating order (interleaving spreads drift and noise from other processes evenly); report
  median times over repetitions, and, as a robust second estimate, the median over
  decode steps of per-step forward-time ratios (the forward calls are timed by a thin
  wrapper around ``mechvalue.lm.backends.forward`` / HF module hooks on the top module);
- profile (separate short run, ``--profile-tokens``): per decode step, time spent in
  TransformerLens components (QKV, KV concat, rotary, scores, causal mask, z, MLP, norms,
  unembed, the mechvalue hook) vs the HF ones (rotary, cache update, SDPA, MLP, norms,
  lm_head, the hook), by wrapping those functions; plus micro-timings of the weight copies
  TransformerLens makes per forward, hook-point dispatch and the per-token loop.

Usage: python benchmarks/bench_generate.py [--batch-size 16] [--max-new-tokens 64] [--reps 2]
       [--layer 15] [--norm 4] [--threads 1] [--no-whatif] [--profile-tokens 8]
       [--out benchmarks/results/bench_generate.json]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

TARGET = 0.9
ARMS = ("mv_plain", "mv_steer", "hf_steer", "mv_steer_whatif")


# ------------------------------------------------------------------ timing helpers


class Recorder:
    """Per-call forward times (the phase is 'prefill' for a multi-token input, else 'decode')."""

    def __init__(self):
        self.calls: list[tuple[str, float, float]] = []  # (phase, wall s, cpu s)
        self.phase = "prefill"

    def reset(self):
        self.calls = []

    def split(self) -> dict:
        pre = [c for c in self.calls if c[0] == "prefill"]
        dec = [c for c in self.calls if c[0] == "decode"]
        return {"prefill_s": sum(c[1] for c in pre), "prefill_cpu_s": sum(c[2] for c in pre),
                "decode_forward_s": sum(c[1] for c in dec), "decode_forward_cpu_s": sum(c[2] for c in dec),
                "decode_steps": len(dec), "per_step": [c[1] for c in dec], "per_step_cpu": [c[2] for c in dec]}


class Patches:
    """Wrap functions/methods with CPU timers (inclusive time per (phase, name)); undo restores them."""

    def __init__(self, rec: Recorder):
        self.rec = rec
        self.t: dict[tuple[str, str], float] = defaultdict(float)
        self.n: dict[tuple[str, str], int] = defaultdict(int)
        self.undo: list = []

    def timed(self, fn, name):
        def w(*a, **k):
            t0 = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                key = (self.rec.phase, name)
                self.t[key] += time.process_time() - t0
                self.n[key] += 1
        return w

    def wrap(self, owner, attr: str, name: str):
        had = isinstance(owner, type) and attr in owner.__dict__ or not isinstance(owner, type) and attr in vars(owner)
        orig = getattr(owner, attr)
        setattr(owner, attr, self.timed(orig, name))
        self.undo.append((owner, attr, orig, had))

    def restore(self):
        for owner, attr, orig, had in reversed(self.undo):
            if had:
                setattr(owner, attr, orig)
            else:
                delattr(owner, attr)
        self.undo = []


def nn_linear_layout(model) -> None:
    """Re-stride TransformerLens weights (same values) so that the transposes it takes per call are views.

    GatedMLP and Unembed call ``W.T.contiguous()`` and attention ``rearrange(W, ...)`` +
    ``.contiguous()`` / ``.reshape`` on every forward: with the weights stored in the
    ``nn.Linear`` (out, in) layout, those return views instead of copying the weights.
    """
    for blk in model.blocks:
        for n in ("W_gate", "W_in", "W_out"):
            p = getattr(blk.mlp, n, None)
            if p is not None:
                p.data = p.data.T.contiguous().T
        attn = blk.attn
        for n in ("W_Q", "_W_K", "_W_V", "W_K", "W_V"):
            p = attn._parameters.get(n)
            if p is not None:  # [head, d_model, d_head] -> stored as [head, d_head, d_model]
                p.data = p.data.transpose(1, 2).contiguous().transpose(1, 2)
        attn.W_O.data = attn.W_O.data.permute(2, 0, 1).contiguous().permute(1, 2, 0)  # stored [d_model, head, d_head]
    model.unembed.W_U.data = model.unembed.W_U.data.T.contiguous().T


def forward_last_logits(model, tokens, attention_mask, **kwargs):
    """Prompt pass computing logits only at the last position (what HF's ``logits_to_keep=1`` does)."""
    if tokens.shape[1] == 1:
        return model(tokens, attention_mask=attention_mask, **kwargs)
    resid = model(tokens, attention_mask=attention_mask, stop_at_layer=model.cfg.n_layers, **kwargs)
    return model.unembed(model.ln_final(resid[:, -1:]))


def common_prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# ------------------------------------------------------------------ main


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--layer", type=int, default=None, help="steered layer (default: n_layers // 2)")
    ap.add_argument("--norm", type=float, default=4.0, help="norm of the random steering vector")
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for every arm (default 1: on a shared 2-core machine 2 threads "
                         "oversubscribe and make timings erratic)")
    ap.add_argument("--no-whatif", action="store_true", help="skip the mv_steer_whatif arm")
    ap.add_argument("--backend", choices=("hooked", "bridge"), default="hooked",
                    help="mechvalue's model class (bridge: HF modules with TransformerLens hooks; no whatif arm)")
    ap.add_argument("--profile-tokens", type=int, default=8, help="new tokens of the profiling runs (0: skip)")
    ap.add_argument("--out", default=str(C.default_out("bench_generate")))
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    import torch

    threads = C.set_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    import mechvalue.interventions.install as mvi
    import mechvalue.lm.backends as BK
    import mechvalue.lm.generation as G
    from mechvalue.interventions.install import AddVector
    from mechvalue.lm.models import load_model, offline_gguf_path
    from mechvalue.lm.prompts import prompt_text, tokenize

    machine = C.machine()
    machine["torch_threads"] = threads
    machine["torch_interop_threads"] = torch.get_num_interop_threads()
    load_warning = C.warn_if_loaded(machine["cores"])
    B, N = args.batch_size, args.max_new_tokens
    arms = [a for a in ARMS if not ((args.no_whatif or args.backend == "bridge") and a == "mv_steer_whatif")]

    t = time.perf_counter()
    model = load_model(device="cpu", backend=args.backend)
    load_mv_s = time.perf_counter() - t
    layer = args.layer if args.layer is not None else model.cfg.n_layers // 2
    gguf = offline_gguf_path()
    t = time.perf_counter()
    hf_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, padding_side="left")
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    load_hf_s = time.perf_counter() - t
    fast = None
    if "mv_steer_whatif" in arms:
        fast = copy.deepcopy(model)
        nn_linear_layout(fast)

    examples = C.chat_examples(B, mode="half")
    vec = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    vec = args.norm * vec / vec.norm()
    spec = AddVector(layer, vec, args.alpha)
    add = (args.alpha * vec).to(torch.float32)

    # same inputs: HF's own chat template + tokenizer must give mechvalue's ids
    mv_batch = tokenize(model.tokenizer, examples, span="all", skip_special=False, padding_side="left")
    enc = hf_tok([prompt_text(hf_tok, e) for e in examples], return_tensors="pt", padding=True,
                 add_special_tokens=False)
    same_ids = (enc["input_ids"].shape == mv_batch.tokens.shape
                and torch.equal(enc["attention_mask"].long(), mv_batch.attention_mask)
                and torch.equal(enc["input_ids"] * enc["attention_mask"], mv_batch.tokens * mv_batch.attention_mask))
    if not same_ids:
        raise SystemExit("HF and mechvalue tokenize the prompts differently: the comparison would be unfair")
    prompt_tokens = int(mv_batch.attention_mask.sum())
    pad = hf_tok.pad_token_id if hf_tok.pad_token_id is not None else hf_tok.eos_token_id
    eos_id = model.tokenizer.eos_token_id

    # ---- timing instrumentation (a wrapper per forward call: negligible next to a forward)
    rec = Recorder()
    orig_forward = BK.forward
    impl = {"fn": orig_forward}

    def timed_forward(m, tokens, attention_mask, **kwargs):
        rec.phase = "prefill" if tokens.shape[1] > 1 else "decode"
        t0, c0 = time.perf_counter(), time.process_time()
        out = impl["fn"](m, tokens, attention_mask, **kwargs)
        rec.calls.append((rec.phase, time.perf_counter() - t0, time.process_time() - c0))
        return out

    BK.forward = timed_forward
    hf_t0 = [0.0, 0.0]

    def hf_pre(mod, a, kw):
        ids = kw.get("input_ids", a[0] if a else None)
        rec.phase = "prefill" if ids is not None and ids.shape[1] > 1 else "decode"
        hf_t0[:] = [time.perf_counter(), time.process_time()]

    def hf_post(mod, a, kw, out):
        rec.calls.append((rec.phase, time.perf_counter() - hf_t0[0], time.process_time() - hf_t0[1]))

    hf.register_forward_pre_hook(hf_pre, with_kwargs=True)
    hf.register_forward_hook(hf_post, with_kwargs=True)

    def steer_hook(mod, inp, out):
        if isinstance(out, tuple):
            return (out[0] + add,) + tuple(out[1:])
        return out + add

    def run_arm(arm: str, exs, n_new: int):
        """One full call; returns (wall s, process CPU s, per-row generated token lists)."""
        rec.reset()
        t0, c0 = time.perf_counter(), time.process_time()
        if arm == "hf_steer":
            with torch.inference_mode():
                e = hf_tok([prompt_text(hf_tok, x) for x in exs], return_tensors="pt", padding=True,
                           add_special_tokens=False)
                handle = hf.model.layers[layer].register_forward_hook(steer_hook)
                try:
                    cfg = GenerationConfig(max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                                           pad_token_id=pad, eos_token_id=hf_tok.eos_token_id)
                    out = hf.generate(**e, generation_config=cfg)
                finally:
                    handle.remove()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            return wall, cpu, out[:, e["input_ids"].shape[1]:].tolist()
        m = fast if arm == "mv_steer_whatif" else model
        impl["fn"] = forward_last_logits if arm == "mv_steer_whatif" else orig_forward
        try:
            g = G.generate(m, exs, () if arm == "mv_plain" else [spec], max_new_tokens=n_new, batch_size=B)
        finally:
            impl["fn"] = orig_forward
        return time.perf_counter() - t0, time.process_time() - c0, g.tokens

    # warm-up: every arm on a tiny call
    for arm in arms:
        run_arm(arm, examples[:2], 2)

    wall = {a: [] for a in arms}
    cpu = {a: [] for a in arms}
    split = {a: [] for a in arms}
    toks: dict[str, list] = {}
    for rep in range(args.reps):
        shift = rep % len(arms)
        for arm in arms[shift:] + arms[:shift]:
            w, c, tk = run_arm(arm, examples, N)
            wall[arm].append(w)
            cpu[arm].append(c)
            split[arm].append(rec.split())
            toks[arm] = tk
            print(f"rep {rep + 1}/{args.reps} {arm}: wall {w:.1f}s cpu {c:.1f}s  load {C.loadavg()}",
                  file=sys.stderr, flush=True)

    # ---- work done and throughput
    work = {}
    for arm in arms:
        lens = [len(r) for r in toks[arm]]
        steps = max(lens)
        work[arm] = {"decode_steps": steps, "positions": B * steps, "generated_tokens": sum(lens),
                     "rows_with_eos": sum(1 for r in toks[arm] if eos_id in r),
                     "forward_calls": 1 + split[arm][-1]["decode_steps"]}
    equal_work = len({work[a]["positions"] for a in arms}) == 1
    med_wall = {a: C.median(wall[a]) for a in arms}
    med_cpu = {a: C.median(cpu[a]) for a in arms}
    tput = {a: work[a]["positions"] / med_cpu[a] for a in arms}  # per CPU second (primary)
    tput_wall = {a: work[a]["positions"] / med_wall[a] for a in arms}
    gen_tput_wall = {a: work[a]["generated_tokens"] / med_wall[a] for a in arms}

    def ratios(a: str, b: str) -> dict:
        """a's throughput / b's: on CPU time (primary), on wall time, and median per decode step (CPU)."""
        per_step = [tb / ta for sa, sb in zip(split[a], split[b])
                    for ta, tb in zip(sa["per_step_cpu"], sb["per_step_cpu"])]
        per_rep = [cpu[b][r] / cpu[a][r] for r in range(args.reps)]
        return {"cpu": tput[a] / tput[b], "wall": tput_wall[a] / tput_wall[b],
                "per_decode_step_cpu_median": C.median(per_step), "cpu_per_rep": per_rep}

    r_steer = ratios("mv_steer", "mv_plain")
    r_hf = ratios("mv_steer", "hf_steer")
    r_whatif = None
    if fast is not None:
        r_whatif = {"vs_hf_steer": ratios("mv_steer_whatif", "hf_steer"),
                    "vs_mv_steer": ratios("mv_steer_whatif", "mv_steer")}

    phases = {}
    for arm in arms:
        nst = max(1, split[arm][-1]["decode_steps"])
        ph = {}
        for kind, tot in (("cpu", med_cpu[arm]), ("wall", med_wall[arm])):
            sfx = "_cpu_s" if kind == "cpu" else "_s"
            pre = C.median([s["prefill" + sfx] for s in split[arm]])
            dec = C.median([s["decode_forward" + sfx] for s in split[arm]])
            ph[kind] = {"total_s": tot, "prefill_s": pre, "decode_forward_s": dec,
                        "decode_ms_per_step": 1e3 * dec / nst, "loop_and_other_s": tot - pre - dec,
                        "loop_ms_per_step": 1e3 * (tot - pre - dec) / nst}
        phases[arm] = ph

    same = {}
    for a, b in (("mv_steer", "hf_steer"), ("mv_steer", "mv_plain"), ("mv_steer_whatif", "mv_steer")):
        if a in toks and b in toks:
            pref = [common_prefix(x, y) for x, y in zip(toks[a], toks[b])]
            same[f"{a}_vs_{b}"] = {"rows_identical_first_tokens": sum(p >= min(len(x), len(y)) for p, x, y
                                                                      in zip(pref, toks[a], toks[b])),
                                   "median_common_prefix": C.median(pref), "rows": B}

    # ---- profile: where the time goes per decode step (separate short runs, wrapped functions)
    profile = None
    if args.profile_tokens > 0:
        profile = run_profile(args, torch, model, hf, rec, run_arm, examples, layer, mvi, Patches,
                              fast is not None)

    res = {
        "benchmark": "bench_generate",
        "target": {"metric": "mv generate throughput with AddVector / without (per CPU second)", "min": TARGET},
        "ratio_steer_vs_plain": r_steer["cpu"],
        "verdict": C.verdict(r_steer["cpu"], TARGET, True),
        "ratio_mv_steer_vs_hf_steer": r_hf["cpu"],
        "ratios": {"steer_vs_plain": r_steer, "mv_steer_vs_hf_steer": r_hf, "mv_steer_whatif": r_whatif},
        "time_base": "primary ratios use process CPU time (time.process_time, 1 torch thread): on a shared, "
                     "oversubscribed CPU it counts only the time this process ran; wall-time ratios are reported too",
        "equal_work": equal_work,
        "work": work,
        "median_cpu_s": med_cpu,
        "median_wall_s": med_wall,
        "cpu_s_per_rep": cpu,
        "wall_s_per_rep": wall,
        "positions_per_cpu_s": tput,
        "positions_per_wall_s": tput_wall,
        "generated_tokens_per_wall_s": gen_tput_wall,
        "phases": phases,
        "outputs_agree": same,
        "profile": profile,
        "settings": {"batch_size": B, "max_new_tokens": N, "greedy": True, "reps": args.reps, "layer": layer,
                     "hook": f"blocks.{layer}.hook_resid_post == output of model.model.layers[{layer}]",
                     "vector_norm": args.norm, "alpha": args.alpha, "prompts": "chat_examples(B, 'half')",
                     "prompt_tokens": prompt_tokens, "prompt_width": int(mv_batch.tokens.shape[1]),
                     "torch_threads": threads, "backend": args.backend,
                     "hf": "AutoModelForCausalLM.from_pretrained(gguf dir, gguf_file=..., dtype=float32), "
                           f"attn_implementation={hf.config._attn_implementation}, min_new_tokens=max_new_tokens",
                     "model": "SmolLM2-135M-Instruct (offline GGUF Q4_1 dequantized to float32, cpu)",
                     "load_s": {"mechvalue": load_mv_s, "hf": load_hf_s}},
        "machine": machine,
        "load_warning": load_warning,
        "wall_s": None,
    }
    BK.forward = orig_forward
    res["wall_s"] = time.perf_counter() - t_start
    out = C.write_json(args.out, res)

    rows = [(a, med_cpu[a], med_wall[a], work[a]["decode_steps"], work[a]["generated_tokens"], tput[a],
             phases[a]["cpu"]["prefill_s"], phases[a]["cpu"]["decode_ms_per_step"],
             phases[a]["cpu"]["loop_ms_per_step"], tput[a] / tput["mv_plain"]) for a in arms]
    print(C.table(rows, ["arm", "cpu s", "wall s", "steps", "gen tokens", "positions/cpu s", "prefill cpu s",
                         "decode ms/step", "loop ms/step", "vs mv_plain"]))

    def line(label, r, target=None):
        extra = f" (target >= {target}: {res['verdict']})" if target else ""
        print(f"{label} = {r['cpu']:.3f} per CPU s{extra}; wall {r['wall']:.3f}; per-step median "
              f"{r['per_decode_step_cpu_median']:.3f}; per rep {', '.join(f'{x:.3f}' for x in r['cpu_per_rep'])}")

    print()
    line("mechvalue steered / plain      ", r_steer, TARGET)
    line("mechvalue steered / HF steered ", r_hf)
    if r_whatif:
        line("what-if / HF steered           ", r_whatif["vs_hf_steer"])
        line("what-if / mechvalue steered    ", r_whatif["vs_mv_steer"])
    print(f"equal work across arms: {equal_work}; outputs: " + "; ".join(
        f"{k}: {v['rows_identical_first_tokens']}/{v['rows']} rows identical" for k, v in same.items()))
    if profile:
        print(f"\nper decode step (CPU ms, {profile['profile_new_tokens']}-token runs), inclusive times of "
              "wrapped functions:")
        print(C.table(profile["table"], profile["columns"]))
        mc = profile["micro"]
        parts = ", ".join(f"{k} {v:.1f}" for k, v in mc["tl_weight_copies_ms_by_part"].items())
        print(f"TL weight copies per forward (measured alone): {mc['tl_weight_copies_ms_per_step']:.1f} CPU ms "
              f"({parts}); "
              f"hook points per step {mc['tl_hookpoints_per_step']} x {mc['hookpoint_call_us']:.1f} us; "
              f"log_softmax over the vocab per step {mc['log_softmax_ms']:.2f} ms")
        print(f"unembed in the prompt pass: {profile['tl_prefill_unembed_s']:.2f} CPU s of "
              f"{profile['tl_prefill_s']:.2f} s (HF lm_head on the last position: "
              f"{profile['hf_prefill_lm_head_s']:.3f} s); "
              f"residual norm at layer {layer}: {profile['resid_norm_at_layer_last_prompt_token_median']:.1f}")
    print(f"batch {B}, {N} new tokens, layer {layer}, |v| = {args.norm}, {args.reps} reps, {threads} thread(s), "
          f"load {machine['loadavg_start']} -> {C.loadavg()}; wall {res['wall_s']:.0f}s -> {out}")
    return res


def run_profile(args, torch, model, hf, rec, run_arm, examples, layer, mvi, Patches, with_whatif) -> dict:
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
    from transformer_lens.hook_points import HookPoint
    from transformers.models.llama import modeling_llama as ML

    attn_cls = type(model.blocks[0].attn)
    tl = {
        "attn (total)": (attn_cls, "forward"),
        "attn: QKV projections": (attn_cls, "calculate_qkv_matrices"),
        "attn: KV cache concat": (TransformerLensKeyValueCacheEntry, "append"),
        "attn: rotary (TL: q + every cached k)": (attn_cls, "apply_rotary"),
        "attn: scores (TL: repeat K + matmul)": (attn_cls, "calculate_attention_scores"),
        "attn: causal/pad mask": (attn_cls, "apply_causal_mask"),
        "attn: z (TL: repeat V + matmul)": (attn_cls, "calculate_z_scores"),
        "mlp (TL: incl. 3 weight transposes)": (type(model.blocks[0].mlp), "forward"),
        "rms norms": (type(model.blocks[0].ln1), "forward"),
        "unembed / lm_head": (type(model.unembed), "forward"),
    }
    hook_count = {"n": 0}
    orig_hp = HookPoint.forward

    def counting(self, x):
        hook_count["n"] += 1
        return x

    orig_spec_hook = mvi._spec_hook

    norms = []

    def norm_hook(act, hook):
        if not norms:
            norms.append(float(act[:, -1].norm(dim=-1).median()))
        return act

    n_new = args.profile_tokens
    runs = {}  # column -> (split, times, counts)
    for col, arm in (("mechvalue/TL", "mv_steer"), ("what-if", "mv_steer_whatif")):
        if arm == "mv_steer_whatif" and not with_whatif:
            continue
        P = Patches(rec)
        for name, (owner, attr) in tl.items():
            P.wrap(owner, attr, name)
        mvi._spec_hook = lambda spec, local_gates, P=P: P.timed(orig_spec_hook(spec, local_gates), "steering hook")
        HookPoint.forward = counting
        hook_count["n"] = 0
        try:
            with model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_post", norm_hook)]):
                run_arm(arm, examples, n_new)
        finally:
            P.restore()
            mvi._spec_hook = orig_spec_hook
            HookPoint.forward = orig_hp
        runs[col] = (rec.split(), dict(P.t), dict(P.n))
        if col == "mechvalue/TL":
            hookpoints = hook_count["n"]
    tl_split, tl_t, tl_n = runs["mechvalue/TL"]

    P2 = Patches(rec)
    hfl = {
        "attn (total)": (ML.LlamaAttention, "forward"),
        "attn: KV cache concat": (None, None),
        "attn: rotary (TL: q + every cached k)": (ML, "apply_rotary_pos_emb"),
        "mlp (TL: incl. 3 weight transposes)": (ML.LlamaMLP, "forward"),
        "rms norms": (ML.LlamaRMSNorm, "forward"),
        "unembed / lm_head": (hf.lm_head, "forward"),
        "rotary cos/sin tables": (ML.LlamaRotaryEmbedding, "forward"),
    }
    from transformers import cache_utils
    hfl["attn: KV cache concat"] = (cache_utils.DynamicLayer, "update")
    for name, (owner, attr) in hfl.items():
        P2.wrap(owner, attr, name)
    sdpa = ML.ALL_ATTENTION_FUNCTIONS[hf.config._attn_implementation]
    ML.ALL_ATTENTION_FUNCTIONS[hf.config._attn_implementation] = P2.timed(sdpa, "attn: SDPA (scores+softmax+z)")
    layer_mod = hf.model.layers[layer]
    orig_reg = layer_mod.register_forward_hook

    def reg(fn, *a, **k):
        return orig_reg(P2.timed(fn, "steering hook"), *a, **k)

    layer_mod.register_forward_hook = reg
    try:
        run_arm("hf_steer", examples, n_new)
    finally:
        P2.restore()
        del ML.ALL_ATTENTION_FUNCTIONS[hf.config._attn_implementation]
        del layer_mod.register_forward_hook
    hf_split = rec.split()
    hf_t, hf_n = dict(P2.t), dict(P2.n)
    runs["HF"] = (hf_split, hf_t, hf_n)

    steps_tl, steps_hf = max(1, tl_split["decode_steps"]), max(1, hf_split["decode_steps"])
    names = list(dict.fromkeys(list(tl) + ["attn: SDPA (scores+softmax+z)", "rotary cos/sin tables", "steering hook"]))
    cols = list(runs)
    table = [("forward (total)", *(1e3 * runs[c][0]["decode_forward_cpu_s"] / max(1, runs[c][0]["decode_steps"])
                                   for c in cols))]
    for name in names:
        row = []
        for c in cols:
            v = runs[c][1].get(("decode", name))
            row.append(float("nan") if v is None else 1e3 * v / max(1, runs[c][0]["decode_steps"]))
        table.append((name, *row))

    # ---- micro-timings (decode-step sized)
    with torch.inference_mode():
        import einops

        def copies_mlp():
            for blk in model.blocks:
                for n in ("W_gate", "W_in", "W_out"):
                    getattr(blk.mlp, n).T.contiguous()

        def copies_attn():
            for blk in model.blocks:
                a = blk.attn
                einops.rearrange(a.W_O, "h d m -> m (h d)").contiguous()
                for w in (a.W_Q, a._W_K, a._W_V):
                    einops.rearrange(w, "h m d -> (h d) m").reshape(-1, w.shape[1])

        def copies_unembed():
            model.unembed.W_U.T.contiguous()

        copy_ms = {}
        for name, fn in (("mlp", copies_mlp), ("attn", copies_attn), ("unembed", copies_unembed)):
            fn()
            ts = []
            for _ in range(3):
                t0 = time.process_time()
                fn()
                ts.append(1e3 * (time.process_time() - t0))
            copy_ms[name] = C.median(ts)
        hp = HookPoint()
        x = torch.randn(args.batch_size, 1, model.cfg.d_model)
        t0 = time.process_time()
        for _ in range(3000):
            hp(x)
        hp_us = 1e6 * (time.process_time() - t0) / 3000
        logits = torch.randn(args.batch_size, model.cfg.d_vocab)
        t0 = time.process_time()
        for _ in range(20):
            torch.log_softmax(logits.float(), -1)
        lsm_ms = 1e3 * (time.process_time() - t0) / 20

    return {
        "profile_new_tokens": n_new,
        "columns": ["component", *cols],
        "table": table,
        "decode_ms_per_step_cpu": {c: {k[1]: 1e3 * v / max(1, runs[c][0]["decode_steps"])
                                       for k, v in runs[c][1].items() if k[0] == "decode"} for c in cols},
        "tl_decode": {k[1]: {"ms_per_step": 1e3 * v / steps_tl, "calls_per_step": tl_n[k] / steps_tl}
                      for k, v in tl_t.items() if k[0] == "decode"},
        "hf_decode": {k[1]: {"ms_per_step": 1e3 * v / steps_hf, "calls_per_step": hf_n[k] / steps_hf}
                      for k, v in hf_t.items() if k[0] == "decode"},
        "tl_prefill": {k[1]: v for k, v in tl_t.items() if k[0] == "prefill"},
        "hf_prefill": {k[1]: v for k, v in hf_t.items() if k[0] == "prefill"},
        "tl_prefill_s": tl_split["prefill_cpu_s"], "hf_prefill_s": hf_split["prefill_cpu_s"],
        "tl_prefill_unembed_s": tl_t.get(("prefill", "unembed / lm_head"), float("nan")),
        "hf_prefill_lm_head_s": hf_t.get(("prefill", "unembed / lm_head"), float("nan")),
        "prefill_cpu_s": {c: runs[c][0]["prefill_cpu_s"] for c in cols},
        "prefill_unembed_cpu_s": {c: runs[c][1].get(("prefill", "unembed / lm_head"), float("nan")) for c in cols},
        "resid_norm_at_layer_last_prompt_token_median": norms[0] if norms else None,
        "micro": {"tl_weight_copies_ms_per_step": sum(copy_ms.values()), "tl_weight_copies_ms_by_part": copy_ms,
                  "tl_hookpoints_per_step": round(hookpoints / (steps_tl + 1)),
                  "hookpoint_call_us": hp_us, "log_softmax_ms": lsm_ms},
        "note": "inclusive CPU times (process_time) of wrapped functions during separate short runs "
                "(wrappers add ~1-2 us per call); micro timings are CPU times too",
    }


if __name__ == "__main__":
    main()
