"""Sanity check of the judge-free instruments (issue: evaluation harness).

Does a value-priority system prompt raise that value's questionnaire score and dilemma
preference relative to no system prompt? Paired per item, bootstrap 95% CIs.

    .venv/bin/python experiments/sanity_system_prompt.py --out experiments/results/sanity_system_prompt.csv
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import pandas as pd

from mechvalue import load_dilemmas, load_model, load_portraits, load_system_prompts
from mechvalue.analysis.metrics import paired_difference, results_frame
from mechvalue.core.artifacts import atomic_path
from mechvalue.core.values import VALUES
from mechvalue.evaluate.scores import dilemma_preference, questionnaire


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", default="experiments/results/sanity_system_prompt.csv")
    ap.add_argument("--n-prompts", type=int, default=5, help="system prompts per value (questionnaire)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.time()
    model = load_model()
    rng = random.Random(args.seed)
    rows = []
    for v in VALUES:
        prompts = load_system_prompts(v)
        chosen = rng.sample(prompts, args.n_prompts)
        items = load_portraits(v)
        base_q = questionnaire(model, items)["score"].to_numpy()
        steered_q = np.mean([questionnaire(model, items, system=p.text)["score"].to_numpy() for p in chosen], axis=0)
        dil = load_dilemmas(v)
        base_d = dilemma_preference(model, dil)["pref"].to_numpy()
        # one sampled system prompt per dilemma
        steered_d = np.array([dilemma_preference(model, [d], system=rng.choice(prompts).text)["pref"].iloc[0]
                              for d in dil])
        for metric, s, b in (("questionnaire", steered_q, base_q), ("dilemma_pref", steered_d, base_d),
                             ("dilemma_win", (steered_d > 0).astype(float), (base_d > 0).astype(float))):
            est, lo, hi = paired_difference(s, b, seed=args.seed)
            rows.append({"method": "system_prompt", "target": v, "value": v, "metric": f"delta_{metric}",
                         "estimate": est, "ci_low": lo, "ci_high": hi, "n": len(s), "base_mean": float(np.mean(b)),
                         "steered_mean": float(np.mean(s))})
        print(f"{v}: questionnaire {rows[-3]['estimate']:+.3f} [{rows[-3]['ci_low']:+.3f}, {rows[-3]['ci_high']:+.3f}]"
              f"  dilemma {rows[-2]['estimate']:+.3f} [{rows[-2]['ci_low']:+.3f}, {rows[-2]['ci_high']:+.3f}]",
              flush=True)
    df = results_frame(rows)
    with atomic_path(args.out) as tmp:
        df.to_csv(tmp, index=False)
    up = df[df.ci_low > 0].groupby("metric").size().to_dict()
    print(pd.DataFrame(rows).pivot(index="target", columns="metric", values="estimate").round(3).to_string())
    print(f"values whose CI lies above 0: {up}; {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
