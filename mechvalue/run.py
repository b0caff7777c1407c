"""The main job behind ``mechvalue run``.

Current scope (foundation): load the model, collect streaming activation statistics at the
last prompt token (where the response starts) of the bundled neutral queries in the
intrinsic condition and, per value, under that value's system prompts; write everything to
a resumable run folder and print how each value prompt shifts the residual stream and the
MLP activation probabilities there.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from ._io import package_versions, write_json_atomic
from .collect import ActivationStats, collect
from .data import load_queries, load_system_prompts
from .models import load_model, model_info
from .prompts import chat
from .values import canonical_list
from .vectors import mean_delta


def _stats(path: Path, model, examples, desc: str, batch_size: int) -> ActivationStats:
    if path.exists():
        return ActivationStats.load(path, model=model)
    stats = collect(model, examples, span="last", batch_size=batch_size, desc=desc,
                    checkpoint=path.with_suffix(".ckpt"))
    stats.save(path)
    return stats


def run_main(args) -> Path:
    t0 = time.time()
    out = Path(args.out)
    values = canonical_list(args.values)
    n_queries = 16 if args.quick else 64
    torch.manual_seed(args.seed)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    rng = random.Random(args.seed)
    queries = load_queries()
    queries = rng.sample(queries, min(n_queries, len(queries)))
    config = {"command": "run", "model": model_info(model), "values": values, "seed": args.seed,
              "quick": args.quick, "n_queries": len(queries), "query_ids": [q.id for q in queries],
              "versions": package_versions()}
    write_json_atomic(out / "config.json", config)

    base = _stats(out / "stats" / "intrinsic.safetensors", model, [chat(q.text) for q in queries],
                  "intrinsic", args.batch_size)
    rows, shifts = [], []
    mid = model.cfg.n_layers // 2
    for v in values:
        prompts = load_system_prompts(v)
        examples = [chat(q.text, system=rng.choice(prompts).text) for q in queries]
        st = _stats(out / "stats" / f"prompted_{v}.safetensors", model, examples, f"prompted:{v}", args.batch_size)
        shift = st.resid_mean - base.resid_mean  # [layer, d_model]
        shifts.append(shift[mid])
        dprob = st.act_prob - base.act_prob  # [layer, d_mlp]
        rows.append({"value": v, "shift_norm_mid": float(shift[mid].norm()),
                     "shift_rel_mid": float(shift[mid].norm() / base.resid_mean[mid].norm()),
                     "neurons_dp_gt_0.25": int((dprob.abs() > 0.25).sum()),
                     "neuron_frac_dp_gt_0.25": float((dprob.abs() > 0.25).float().mean())})
    import pandas as pd

    df = pd.DataFrame(rows)
    with_path = out / "summary.csv"
    df.to_csv(with_path, index=False)
    print(f"\nmodel {config['model']['model_id']}: {len(queries)} neutral queries, layer {mid} of "
          f"{model.cfg.n_layers}; value system prompt vs none:")
    print(df.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if len(shifts) > 1:
        _, share = mean_delta(torch.stack(shifts))
        print(f"share of the value-prompt shifts' energy along their mean direction (layer {mid}): {share:.3f} "
              f"(1/{len(shifts)} = {1 / len(shifts):.3f} if unrelated)")
    print(f"\nrun folder: {out} ({time.time() - t0:.0f} s)")
    return out
