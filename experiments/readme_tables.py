"""Print the README's result tables (markdown) from a run folder: ``python experiments/readme_tables.py runs/default``.

Every number in the README's results section comes from this script's output on the named run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def ci(est, lo, hi, fmt="{:.3f}") -> str:
    if pd.isna(est):
        return "–"
    if pd.isna(lo):
        return fmt.format(est)
    return f"{fmt.format(est)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main(run: Path) -> None:
    cfg = json.loads((run / "config.json").read_text())
    print(f"run: {run}  values: {len(cfg['values'])}  quick: {cfg['quick']}  seed: {cfg['seed']}")
    for step in ("judge", "valuelocate", "conva", "neva", "dual", "steering", "audits", "report"):
        p = run / step / "DONE.json"
        if p.exists():
            print(f"  {step}: {json.loads(p.read_text())['seconds']} s")
    p = run / "valuelocate" / "fraction_vs_tau.csv"
    if p.exists():
        print("\n## ValueLocate: fraction of MLP neurons selected\n")
        print(md(pd.read_csv(p).round(4)))
        lc = pd.read_csv(run / "valuelocate" / "layer_counts.csv")
        lc["third"] = pd.cut(lc.relative_depth, [-0.01, 1 / 3, 2 / 3, 1.0], labels=["early", "middle", "late"])
        print("\n" + md(lc.pivot_table(index="set", columns="third", values="count", aggfunc="sum",
                                       observed=False).reset_index()))
        causal = pd.read_csv(run / "valuelocate" / "causal.csv")
        causal["estimate [95% CI]"] = [ci(r.estimate, r.ci_low, r.ci_high) for r in causal.itertuples()]
        print("\n" + md(causal[["target", "arm", "value", "metric", "n_neurons", "estimate [95% CI]"]]))
    p = run / "conva" / "probe_accuracy.csv"
    if p.exists():
        acc = pd.read_csv(p)
        rows = []
        for v, g in acc.groupby("value", sort=False):
            best = g.loc[g.accuracy.idxmax()]
            rows.append({"value": v, "best layer": int(best.layer), "best acc": round(best.accuracy, 3),
                         "selected": ",".join(str(x) for x in g[g.selected].layer),
                         "mean acc (layers 10-20)": round(g[(g.layer >= 10) & (g.layer <= 20)].accuracy.mean(), 3)})
        print("\n## ConVA probes\n\n" + md(pd.DataFrame(rows)))
    p = run / "steering" / "summary.csv"
    if p.exists():
        s = pd.read_csv(p)
        out = pd.DataFrame({"method": s.method})
        for m in ("control_success", "judged_gain", "dilemma_gain", "nlr", "perplexity", "mmlu"):
            if m in s:
                out[m] = [ci(r[m], r.get(f"{m}_ci_low"), r.get(f"{m}_ci_high")) for _, r in s.iterrows()]
        out["distinct_2"] = s.distinct_2.round(3)
        print("\n## Steering study\n\n" + md(out))
        res = pd.read_csv(run / "steering" / "results.csv")
        for metric, label in (("dilemma_delta", "dilemma preference change (nats)"),
                              ("judged_delta", "judged target-score change")):
            r = res[(res.metric == metric) & (res.value == res.target)].copy()
            r["cell"] = [ci(x.estimate, x.ci_low, x.ci_high, "{:+.2f}") for x in r.itertuples()]
            print(f"\nper target: {label}\n\n" + md(r.pivot(index="target", columns="method", values="cell")
                                                      .reset_index()))
        t = run / "steering" / "tests.csv"
        if t.exists():
            tests = pd.read_csv(t)
            pooled = tests[tests.target == "all"].copy()
            pooled["estimate [95% CI]"] = [ci(x.estimate, x.ci_low, x.ci_high, "{:+.3f}") for x in pooled.itertuples()]
            pooled["p_adj"] = pooled.p_adj.map(lambda x: f"{x:.2g}")
            pooled["mde"] = pooled.mde.round(3)
            print("\n## Paired tests, pooled over targets (BH-adjusted)\n\n" + md(pooled[
                ["method", "metric", "comparison", "estimate [95% CI]", "n", "mde", "p_adj", "n_controls"]]))
            per = tests[(tests.target != "all")]
            sig = per.assign(up=(per.p_adj < 0.05) & (per.estimate > 0)).groupby(["method", "metric", "comparison"])
            print("\ntargets significantly higher after BH (of the targets tested)\n\n" + md(
                sig.agg(higher=("up", "sum"), tested=("up", "size")).reset_index()))
        g = run / "steering" / "gate_rates.csv"
        if g.exists():
            print("\ngate rates (mean): " + pd.read_csv(g).drop(columns="target").mean().round(3).to_string())
        for m in ("conva", "neva"):
            q = run / "steering" / f"nglr_group_group_{m}.csv"
            if q.exists():
                print(f"\nNGLR group->group ({m})\n\n" + md(pd.read_csv(q).round(2)))
    for name in ("judge_validity.csv", "judge_touche.csv", "groups.csv"):
        q = run / "dual" / name
        if q.exists():
            print(f"\n## dual/{name}\n\n" + md(pd.read_csv(q).drop(columns=["source"], errors="ignore").round(3)))
    for q in sorted((run / "circuits").glob("validation_summary_*.csv")) if (run / "circuits").exists() else []:
        v = q.stem.removeprefix("validation_summary_")
        print(f"\n## circuits: {v}\n\n" + md(pd.read_csv(q).round(3)))
        ex = pd.read_csv(run / "circuits" / f"exact_{v}.csv")
        top = ex.assign(a=ex.normalized_effect.abs()).nlargest(6, "a")
        top["effect [95% CI]"] = [ci(x.effect, x.ci_low, x.ci_high, "{:+.3f}") for x in top.itertuples()]
        print("\n" + md(top[["component", "layer", "effect [95% CI]", "normalized_effect", "n"]].round(3)))
        atp = pd.read_csv(run / "circuits" / f"atp_{v}.csv")
        for comp in ("neurons", "heads"):
            a = atp[atp.component == comp].assign(a=lambda d: d.effect.abs()).nlargest(8, "a")
            print(f"\ntop {comp} by |AtP|\n\n" + md(a[["layer", "head", "neuron", "effect", "normalized_effect",
                                                           "ci_low", "ci_high"]].dropna(axis=1, how="all").round(3)))
        print("\n" + md(pd.read_csv(run / "circuits" / f"overlap_{v}.csv").round(3)))
    p = run / "dual" / "structure.json"
    if p.exists():
        print("\n## Dual\n\n" + p.read_text())
        for name in ("cosines.csv", "class_counts.csv"):
            q = run / "dual" / name
            if q.exists():
                print(f"\n{name}\n\n" + md(pd.read_csv(q).round(3)))
        q = run / "dual" / "steering.csv"
        if q.exists():
            d = pd.read_csv(q)
            d["estimate [95% CI]"] = [ci(r.estimate, r.ci_low, r.ci_high) for r in d.itertuples()]
            keep = [c for c in ("vector_type", "neuron_class", "target", "metric", "alpha", "beta", "estimate [95% CI]")
                    if c in d]
            print("\n" + md(d[keep]))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/default"))
