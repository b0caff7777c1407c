"""Judge-free verdicts from the study's BH-adjusted paired tests (mechvalue.report.adjusted)."""

from __future__ import annotations

import pandas as pd

from mechvalue.pipeline.comparisons import comparisons
from mechvalue.report.adjusted import adjusted_verdicts, word


def _row(est, p_adj, mde, **kw):
    return {"estimate": est, "p_adj": p_adj, "mde": mde, **kw}


def test_the_word_comes_from_the_adjusted_p_and_the_mde():
    assert word(_row(0.4, 0.001, 0.1)) == "higher"
    assert word(_row(-0.4, 0.01, 0.1)) == "lower"
    assert word(_row(0.05, 0.3, 0.2)).startswith("underpowered (MDE 0.2 > |effect| 0.05)")
    assert word(_row(0.3, 0.2, 0.1)) == "not significant"
    assert word(_row(float("nan"), 0.2, 0.1)) == "undefined"


def test_verdicts_from_the_study_comparisons():
    import numpy as np

    rng = np.random.default_rng(1)
    targets = ["power", "benevolence"]
    recs, ctls = [], []
    for t in targets:
        base = rng.normal(0, 1, 40)
        for arm, shift in (("base", 0), ("prompting", 1.0), ("caa", 0.6)):
            recs.append({"arm": arm, "target": t, "dilemma_pref": (base + shift + rng.normal(0, .2, 40)).tolist(),
                         "judged": rng.uniform(0, 1, (4, 10)).tolist(), "portrait_score": [3.0] * 5,
                         "portrait_value": [t] * 5})
        ctls.append({"arm": "caa", "target": t, "n_controls": 10, "portrait_score": [3.0] * 5,
                     "dilemma_pref": (base + rng.normal(0, .2, 40)).tolist()})
    tests = comparisons(recs, ctls, targets)
    out = dict(adjusted_verdicts(tests))
    assert set(out) == {"prompting", "caa"}
    caa = out["caa"]
    assert caa.startswith("CAA: dilemma preference vs base +0.5") and "nats (n = 80" in caa
    assert "vs 10 matched random controls" in caa and "higher on 2 of 2 targets after adjustment" in caa
    assert "vs the value system prompt -0.4" in caa and "lower" in caa
    assert "questionnaire rating vs base +0.00" in caa and "p_adj" in caa
    assert adjusted_verdicts(pd.DataFrame({"method": ["x"]})) == []
