"""Judge validity on generations (mechvalue.evaluate.validity): AUC per value and the near-constant flag."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mechvalue.core.errors import DataError
from mechvalue.evaluate.validity import VALIDITY_COLUMNS, judge_validity


def _labels(rng, value, pos, neg, n=30):
    rows = [{"id": f"p{k}", "condition": "prompted", "value": value, "score": s} for k, s in enumerate(pos(n))]
    rows += [{"id": f"i{k}", "condition": "intrinsic", "value": value, "score": s} for k, s in enumerate(neg(n))]
    return rows


def test_a_separating_judge_has_high_auc_and_a_constant_one_is_flagged():
    rng = np.random.default_rng(0)
    rows = _labels(rng, "power", lambda n: rng.uniform(0.6, 1.0, n), lambda n: rng.uniform(0.0, 0.5, n))
    rows += _labels(rng, "benevolence", lambda n: rng.uniform(0, 1, n), lambda n: rng.uniform(0, 1, n))
    rows += _labels(rng, "tradition", lambda n: 0.5 + rng.normal(0, 0.01, n), lambda n: 0.5 + rng.normal(0, 0.01, n))
    df = judge_validity(pd.DataFrame(rows), ["power", "benevolence", "tradition"]).set_index("value")
    assert list(df.reset_index().columns) == list(VALIDITY_COLUMNS)
    assert df.loc["power", "auc"] == 1.0 and not df.loc["power", "flagged"]
    assert 0.3 < df.loc["benevolence", "auc"] < 0.7 and not df.loc["benevolence", "flagged"]
    assert df.loc["tradition", "flagged"] and df.loc["tradition", "std"] < 0.05
    assert df.loc["power", "n_prompted"] == 30 and df.loc["power", "n_neutral"] == 30


def test_missing_sides_give_nan_auc_and_bad_frames_are_refused():
    df = judge_validity(pd.DataFrame([{"condition": "prompted", "value": "power", "score": 0.7}]), ["power", "SD"])
    assert math.isnan(df.auc[0]) and df.flagged[0]  # one score: no spread
    assert df.n_prompted[1] == 0 and df.flagged[1]
    with pytest.raises(DataError, match=r"missing \['score'\]"):
        judge_validity(pd.DataFrame([{"condition": "prompted", "value": "power"}]))
