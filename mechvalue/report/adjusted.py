"""Judge-free verdicts from the study's paired tests (``steering/tests.csv``), Benjamini-Hochberg adjusted.

One sentence per method: its dilemma-preference and questionnaire gains against base, against its matched
random controls and against the value system prompt, each with the 95% CI, n, the minimum detectable effect
at 80% power and the adjusted p, and on how many targets the per-target test survives the adjustment. The
word for each comparison comes from the adjusted result: "higher" / "lower" where ``p_adj < 0.05``,
"underpowered" where not and the MDE exceeds the effect, else "not significant".
"""

from __future__ import annotations

import math

import pandas as pd

from mechvalue.methods.registry import METHOD_NAMES
from mechvalue.methods.registry import label as method_label

METRIC_WORDS = {"dilemma": ("dilemma preference", "nats"), "questionnaire": ("questionnaire rating", "points"),
                "judged": ("judged target score", "")}
COMPARISON_WORDS = {"base": "vs base", "random": "vs matched random controls", "prompt": "vs the value system prompt"}


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def word(row) -> str:
    """``higher`` / ``lower`` (significant after adjustment), ``underpowered (MDE ...)`` or ``not significant``."""
    est, p_adj, m = _num(row["estimate"]), _num(row["p_adj"]), _num(row["mde"])
    if not math.isfinite(est) or not math.isfinite(p_adj):
        return "undefined"
    if p_adj < 0.05:
        return "higher" if est > 0 else "lower"
    if not math.isfinite(m) or m > abs(est):
        return f"underpowered (MDE {m:.2g} > |effect| {abs(est):.2g})" if math.isfinite(m) else "underpowered"
    return "not significant"


def comparison_clause(row, per_target: pd.DataFrame | None = None) -> str:
    """``vs base +0.31 [0.20, 0.42] nats (n = 360, MDE 0.08, p_adj 0.001: higher; 7 of 10 targets)``."""
    name, unit = METRIC_WORDS.get(str(row["metric"]), (str(row["metric"]), ""))
    comp = COMPARISON_WORDS.get(str(row["comparison"]), str(row["comparison"]))
    if str(row["comparison"]) == "random" and _num(row.get("n_controls")) > 0:
        comp = f"vs {int(_num(row['n_controls']))} matched random controls"
    ci = (f" [{_num(row['ci_low']):+.2f}, {_num(row['ci_high']):+.2f}]"
          if math.isfinite(_num(row["ci_low"])) else "")
    stats = [f"n = {int(_num(row['n']))}"]
    if math.isfinite(_num(row["mde"])):
        stats.append(f"MDE {_num(row['mde']):.2g}")
    if math.isfinite(_num(row["p_adj"])):
        stats.append(f"p_adj {_num(row['p_adj']):.2g}")
    tail = f"{', '.join(stats)}: {word(row)}"
    if per_target is not None and len(per_target):
        sig = per_target[per_target["p_adj"] < 0.05]
        up = int((pd.to_numeric(sig["estimate"]) > 0).sum())
        tail += f"; higher on {up} of {len(per_target)} targets after adjustment"
    return f"{name} {comp} {_num(row['estimate']):+.2f}{ci}{(' ' + unit) if unit else ''} ({tail})"


def adjusted_verdicts(tests: pd.DataFrame, metrics: tuple[str, ...] = ("dilemma", "questionnaire")) -> list[
        tuple[str, str]]:
    """``(method, sentence)`` per tested method in the registry's order (pooled rows, per-target counts)."""
    need = {"method", "target", "metric", "comparison", "estimate", "ci_low", "ci_high", "n", "mde", "p_adj"}
    if not need <= set(tests.columns):
        return []
    order = sorted(tests["method"].astype(str).unique(),
                   key=lambda m: (METHOD_NAMES.index(m) if m in METHOD_NAMES else len(METHOD_NAMES), m))
    out = []
    for m in order:
        sub = tests[tests["method"].astype(str) == m]
        clauses = []
        for metric in metrics:
            for comp in COMPARISON_WORDS:
                rows = sub[(sub["metric"] == metric) & (sub["comparison"] == comp)]
                pooled = rows[rows["target"].astype(str) == "all"]
                if pooled.empty:
                    continue
                clauses.append(comparison_clause(pooled.iloc[0], rows[rows["target"].astype(str) != "all"]))
        if clauses:
            out.append((m, f"{method_label(m)}: " + "; ".join(clauses) + "."))
    return out
