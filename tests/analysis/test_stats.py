"""Paired tests, minimum detectable effects and Benjamini-Hochberg (mechvalue.analysis.stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mechvalue.analysis.stats import NAN_TEST, benjamini_hochberg, mde, paired_test
from mechvalue.core.errors import MechvalueError


def test_mde_is_the_effect_detected_with_80_percent_power():
    """Planted: effects at the MDE are detected ~80% of the time; at a third of it, rarely."""
    rng = np.random.default_rng(0)
    n, sd = 40, 1.0
    m = mde(sd / math.sqrt(n))
    assert m == pytest.approx((1.959964 + 0.841621) * sd / math.sqrt(n), rel=1e-5)

    def power(effect):
        hits = [paired_test(rng.normal(effect, sd, n), n_boot=10).p < 0.05 for _ in range(400)]
        return float(np.mean(hits))

    assert 0.70 < power(m) < 0.88
    assert power(m / 3) < 0.3
    assert power(0.0) < 0.09  # the test's size


def test_paired_test_fields_and_nan_handling():
    d = [0.5, 0.7, 0.6, np.nan, 0.4]
    t = paired_test(d)
    assert t.n == 4 and t.estimate == pytest.approx(0.55)
    assert t.se == pytest.approx(np.std([0.5, 0.7, 0.6, 0.4], ddof=1) / 2)
    assert t.ci_low < t.estimate < t.ci_high and t.p < 0.01 and not t.underpowered
    one = paired_test([1.0, np.nan])
    assert one.n == 1 and one.estimate == 1.0 and math.isnan(one.p) and one.underpowered
    assert paired_test([0.0, 0.0, 0.0]).p == 1.0 and paired_test([1.0, 1.0]).p == 0.0
    assert math.isnan(NAN_TEST.estimate) and set(t.row()) == {"estimate", "ci_low", "ci_high", "se", "p", "mde", "n"}


def test_benjamini_hochberg_matches_the_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.20, np.nan])
    # sorted 0.01, 0.03, 0.04, 0.20 (m = 4): 0.04, 0.06, 0.0533, 0.20 -> monotone from the top: 0.04, .0533, .0533, .2
    adj = benjamini_hochberg(p)
    np.testing.assert_allclose(adj[:4], [0.04, 0.16 / 3, 0.16 / 3, 0.20])
    assert math.isnan(adj[4])
    assert benjamini_hochberg([]).shape == (0,)
    assert (benjamini_hochberg([0.5, 0.9, 1.0]) <= 1).all()


@pytest.mark.parametrize(("call", "match"), [
    (lambda: paired_test([]), "paired_test: diff must be a non-empty 1-D run"),
    (lambda: paired_test([1.0, np.inf]), "diff"),
    (lambda: benjamini_hochberg([0.2, 1.5]), "p-values must lie in"),
    (lambda: mde(0.1, power=1.0), "alpha and power must be in"),
])
def test_bad_input_is_refused_naming_it(call, match):
    with pytest.raises(MechvalueError, match=match):
        call()
