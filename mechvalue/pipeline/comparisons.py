"""The steering study's paired tests: every arm against base, its matched random controls and the value
system prompt, per target and pooled, with minimum detectable effects and Benjamini-Hochberg.

Inputs are the study's raw records (:func:`mechvalue.pipeline.study.score_arm`) and control records
(:func:`mechvalue.pipeline.study.score_control`). Metrics (per item, paired on the same items):

- ``dilemma``: dilemma preference, log P(value answer) - log P(conflicting answer), nats, every dilemma of
  the target;
- ``questionnaire``: expected 1-6 rating of the target's portrait items (questionnaire points);
- ``judged``: the judge's target score of a generation, 0-1 (no random controls: they are scored judge-free).

Comparisons: ``base`` (arm - base), ``random`` (arm - the arm's matched random control on the same item; each
item meets one of ``n_controls`` draws, see :func:`mechvalue.pipeline.study.score_control`), ``prompt``
(arm - the value system prompt arm). ``p_adj`` is Benjamini-Hochberg over the targets x arms of one
comparison and metric (pooled rows: over the arms); ``significant`` is ``p_adj < 0.05``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mechvalue.analysis.stats import benjamini_hochberg, paired_test
from mechvalue.core.values import VALUES

METRICS: tuple[str, ...] = ("dilemma", "questionnaire", "judged")
UNITS = {"dilemma": "nats", "questionnaire": "points (1-6)", "judged": "judge score (0-1)"}
COMPARISONS: tuple[str, ...] = ("base", "random", "prompt")
PROMPT_ARM = "prompting"
TEST_COLUMNS = ("method", "target", "value", "metric", "comparison", "estimate", "ci_low", "ci_high", "n", "se",
                "p", "p_adj", "mde", "significant", "n_controls")


def item_scores(record: dict, metric: str, target: str) -> np.ndarray | None:
    """Per-item scores of one record for ``metric`` (None when the record lacks it)."""
    if metric == "dilemma":
        return np.asarray(record["dilemma_pref"], float) if "dilemma_pref" in record else None
    if metric == "questionnaire":
        if "portrait_score" not in record:
            return None
        score = np.asarray(record["portrait_score"], float)
        owner = record.get("portrait_value")
        return score if owner is None else score[np.asarray(owner) == target]
    if metric == "judged":
        return np.asarray(record["judged"], float)[:, VALUES.index(target)] if "judged" in record else None
    raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")


def _control_scores(controls: Sequence[dict], arm: str, target: str, metric: str) -> tuple[np.ndarray | None, int]:
    """Per-item scores under the arm's random controls (each item under its assigned draw) and the number of
    distinct draws."""
    for c in controls:
        if c["arm"] == arm and c["target"] == target:
            return item_scores(c, metric, target), int(c.get("n_controls", 1))
    return None, 0


def comparisons(records: Sequence[dict], controls: Sequence[dict], targets: Sequence[str], *,
                judged_targets: Sequence[str] | None = None, seed: int = 0) -> pd.DataFrame:
    """Tidy test rows (:data:`TEST_COLUMNS`) for every arm but base, per target and pooled (``target="all"``);
    the ``judged`` metric only for ``judged_targets`` (default: all)."""
    by = {(r["arm"], r["target"]): r for r in records}
    arms = list(dict.fromkeys(r["arm"] for r in records if r["arm"] != "base"))
    rows = []
    for arm in arms:
        for metric in METRICS:
            for comp in COMPARISONS:
                if comp == "prompt" and arm == PROMPT_ARM:
                    continue
                pooled, n_ctrl = [], 0
                for t in targets:
                    if (arm, t) not in by or ("base", t) not in by:
                        continue
                    if metric == "judged" and judged_targets is not None and t not in judged_targets:
                        continue
                    x = item_scores(by[(arm, t)], metric, t)
                    if comp == "base":
                        ref, k = item_scores(by[("base", t)], metric, t), 0
                    elif comp == "random":
                        ref, k = _control_scores(controls, arm, t, metric) if metric != "judged" else (None, 0)
                    else:
                        ref, k = (item_scores(by[(PROMPT_ARM, t)], metric, t), 0) if (PROMPT_ARM, t) in by else (
                            None, 0)
                    if x is None or ref is None or len(x) != len(ref) or len(x) == 0:
                        continue
                    d = x - ref
                    pooled.append(d)
                    n_ctrl = max(n_ctrl, k)
                    rows.append({"method": arm, "target": t, "value": t, "metric": metric, "comparison": comp,
                                 **paired_test(d, seed=seed).row(), "n_controls": k})
                if pooled:
                    rows.append({"method": arm, "target": "all", "value": "target", "metric": metric,
                                 "comparison": comp, **paired_test(np.concatenate(pooled), seed=seed).row(),
                                 "n_controls": n_ctrl})
    df = pd.DataFrame(rows, columns=[c for c in TEST_COLUMNS if c not in ("p_adj", "significant")])
    df["p_adj"] = np.nan
    for _, g in df.groupby(["comparison", "metric", df["target"] == "all"]):
        df.loc[g.index, "p_adj"] = benjamini_hochberg(g["p"].to_numpy(float)) if len(g) else []
    df["significant"] = df["p_adj"] < 0.05
    return df[list(TEST_COLUMNS)]
