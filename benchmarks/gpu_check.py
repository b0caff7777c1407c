"""GPU check: a Qwen2.5-7B-shaped model with random weights (no hub) in bf16 on one GPU.

Prints, measured in one run with the arms interleaved: collection throughput against a plain HF forward
over the same batches (target >= 0.9), steered generation throughput (one ``AddVector``) against HF
``generate()`` with an equivalent forward hook (target >= 1.0), and peak GPU memory. Writes
``results/gpu_check.json``. ``--tiny`` runs the same code on a 2-layer model (a CPU smoke test).

    benchmarks/gpu_check.sh            # on a GPU machine, < 10 minutes
    python benchmarks/gpu_check.py --tiny --device cpu
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

QWEN25_7B = dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                 intermediate_size=18944, max_position_embeddings=4096, rope_theta=1e6)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, max_position_embeddings=512)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--backend", choices=("bridge", "hooked"), default="bridge")
    ap.add_argument("--out", default=str(C.default_out("gpu_check")))
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from mechvalue.interventions.install import AddVector
    from mechvalue.lm.collect import collect
    from mechvalue.lm.generation import generate
    from mechvalue.lm.models import from_hf, model_info
    from mechvalue.lm.offline import offline_gguf_path
    from mechvalue.lm.prompts import prompt_text, tokenize

    dtype = torch.float32 if args.tiny else torch.bfloat16
    gguf = offline_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, padding_side="left")
    cfg = AutoConfig.for_model("qwen2", vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                               **(TINY if args.tiny else QWEN25_7B))
    cfg.architectures = ["Qwen2ForCausalLM"]
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(args.device):
        hf = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
    ours_hf = copy.deepcopy(hf)  # the bridge wraps its HF model in place: the baseline keeps a clean copy
    model = from_hf(ours_hf, tok, model_id="qwen2.5-7b-shaped-random", backend=args.backend)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in hf.parameters())
    layer = cfg.num_hidden_layers // 2
    vec = torch.randn(cfg.hidden_size, generator=torch.Generator().manual_seed(0))
    vec = 4.0 * vec / vec.norm()
    spec = AddVector(layer, vec, 1.0)
    exs = C.chat_examples(args.batch_size, mode="half")
    B, N = args.batch_size, args.max_new_tokens

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    add = vec.to(args.device, dtype)

    def steer_hook(mod, inp, out):
        return (out[0] + add,) + tuple(out[1:]) if isinstance(out, tuple) else out + add

    batch = tokenize(tok, exs, span="all", skip_special=False, padding_side="left")

    def arm(name):
        sync()
        t = time.perf_counter()
        with torch.inference_mode():
            if name == "hf_forward":
                hf(batch.tokens.to(args.device), attention_mask=batch.attention_mask.to(args.device))
            elif name == "mv_collect":
                collect(model, exs, batch_size=B, max_tokens=None, progress=False, skip_special=False)
            elif name == "hf_steer":
                e = tok([prompt_text(tok, x) for x in exs], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(args.device)
                h = hf.model.layers[layer].register_forward_hook(steer_hook)
                try:
                    hf.generate(**e, generation_config=GenerationConfig(
                        max_new_tokens=N, min_new_tokens=N, do_sample=False, pad_token_id=tok.pad_token_id))
                finally:
                    h.remove()
            else:
                generate(model, exs, [spec], max_new_tokens=N, batch_size=B)
        sync()
        return time.perf_counter() - t

    arms = ["hf_forward", "mv_collect", "hf_steer", "mv_steer"]
    for a in arms:  # warm-up
        arm(a)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = {a: [] for a in arms}
    for rep in range(args.reps):
        for a in arms[rep % 2:] + arms[:rep % 2]:
            times[a].append(arm(a))
    med = {a: C.median(v) for a, v in times.items()}
    res = {"model": "Qwen2.5-7B-shaped, random weights" if not args.tiny else "tiny qwen2",
           "n_params": n_params, "dtype": str(dtype), "device": args.device, "backend": model_info(model)["backend"],
           "build_s": build_s, "median_s": med,
           "collect_vs_hf_forward": med["hf_forward"] / med["mv_collect"],
           "steered_generation_vs_hf_generate_hook": med["hf_steer"] / med["mv_steer"],
           "peak_gpu_memory_gib": (torch.cuda.max_memory_allocated() / 2**30) if args.device.startswith("cuda")
           else None,
           "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
           "settings": {"batch_size": B, "max_new_tokens": N, "reps": args.reps, "layer": layer}}
    C.write_json(args.out, res)
    for k in ("model", "backend", "n_params", "dtype", "gpu", "collect_vs_hf_forward",
              "steered_generation_vs_hf_generate_hook", "peak_gpu_memory_gib", "build_s"):
        print(f"{k}: {res[k]}")
    return res


if __name__ == "__main__":
    main()
