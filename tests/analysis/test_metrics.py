"""Metrics: hand-computed leakage on planted tables, bootstrap coverage, diversity."""

from __future__ import annotations

import numpy as np
import pytest

from mechvalue.analysis.metrics import (
    bootstrap_ci,
    csr_labels,
    distinct_n,
    ead_n,
    leakage,
    nglr_group_group,
    nglr_target_group,
    nlr,
    paired_difference,
    repetition_rate,
    results_frame,
)
from mechvalue.core.errors import MechvalueError
from mechvalue.core.values import VALUES

IDX = {v: i for i, v in enumerate(VALUES)}


def planted_delta():
    """Steering benevolence: +0.4 on itself, +0.2 on universalism, +0.1 on conformity, -0.3 on achievement.
    Steering power: +0.2 on itself, +0.1 on achievement and +0.1 on hedonism."""
    d = np.zeros((2, 10))
    d[0, IDX["benevolence"]], d[0, IDX["universalism"]], d[0, IDX["conformity"]] = 0.4, 0.2, 0.1
    d[0, IDX["achievement"]] = -0.3
    d[1, IDX["power"]], d[1, IDX["achievement"]], d[1, IDX["hedonism"]] = 0.2, 0.1, 0.1
    return d, ["benevolence", "power"]


def test_leakage_and_nlr_by_hand():
    d, targets = planted_delta()
    L = leakage(d, targets)
    assert L[0, IDX["benevolence"]] == 0 and L[0, IDX["achievement"]] == 0  # on-target and negative dropped
    assert L[0].sum() == pytest.approx(0.3)
    r = nlr(d, targets)
    assert r[0] == pytest.approx((0.3 / 9) / 0.4)
    assert r[1] == pytest.approx((0.2 / 9) / 0.2)


def test_nlr_eps_floor_and_headroom():
    d = np.zeros((1, 10))
    d[0, IDX["power"]] = -0.5  # target fell
    d[0, IDX["security"]] = 0.09
    assert nlr(d, ["power"], eps=0.01)[0] == pytest.approx(0.01 / 0.01)
    base = np.full(10, 0.7)
    assert nlr(d, ["power"], base=base, headroom=True)[0] == pytest.approx((0.09 / 0.3 / 9) / 0.01)
    with pytest.raises(MechvalueError, match="base"):
        nlr(d, ["power"], headroom=True)


def test_nglr_target_to_group_by_hand():
    d, targets = planted_delta()
    df = nglr_target_group(d, targets, groups="HO4")
    mean_all = 0.3 / 9
    # benevolence -> TRAN = {benevolence (excluded: target), universalism}: 0.2
    assert df.loc["benevolence", "TRAN"] == pytest.approx(0.2 / mean_all)
    # -> CONS = {security, conformity, tradition}: (0 + 0.1 + 0) / 3
    assert df.loc["benevolence", "CONS"] == pytest.approx((0.1 / 3) / mean_all)
    # power -> ENH = {achievement 1, hedonism 0.5} (power excluded): (0.1 + 0.5 * 0.1) / 1.5
    assert df.loc["power", "ENH"] == pytest.approx(((0.1 + 0.05) / 1.5) / (0.2 / 9))


def test_nglr_undefined_without_leakage():
    d = np.zeros((1, 10))
    d[0, IDX["tradition"]] = 0.5
    assert np.isnan(nglr_target_group(d, ["tradition"]).values).all()


def test_nglr_group_to_group_by_hand():
    d, targets = planted_delta()
    gg = nglr_group_group(d, targets, groups="HO4")
    # only TRAN (benevolence) and ENH (power) contain targets
    assert gg.loc["TRAN", "TRAN"] == pytest.approx(0.2 / 0.4)
    assert gg.loc["TRAN", "CONS"] == pytest.approx((0.1 / 3) / 0.4)
    assert gg.loc["ENH", "OPEN"] == pytest.approx(((0.5 * 0.1) / 2.5) / 0.2)
    assert np.isnan(gg.loc["CONS"]).all()


def test_circumplex_weighting_counts_opposites_more():
    d = np.zeros((2, 10))
    d[:, IDX["universalism"]] = 0.5
    d[0, IDX["security"]] = 0.1  # adjacent-ish to conformity target? use benevolence target below
    targets = ["benevolence", "power"]
    d[0, IDX["benevolence"]] = d[1, IDX["power"]] = 0.5
    w = leakage(d, targets, weights="circumplex")
    # universalism is adjacent to benevolence and opposite to power
    assert w[1, IDX["universalism"]] > w[0, IDX["universalism"]]


def test_bootstrap_coverage_near_nominal():
    rng = np.random.default_rng(1)
    hits = 0
    trials = 200
    for k in range(trials):
        x = rng.normal(0.3, 1.0, size=40)
        _, lo, hi = bootstrap_ci(x, n_boot=400, seed=k)
        hits += lo <= 0.3 <= hi
    assert 0.88 <= hits / trials <= 0.99


def test_paired_difference_and_errors():
    est, lo, hi = paired_difference([2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0])
    assert est == lo == hi == 1.0
    with pytest.raises(MechvalueError):
        paired_difference([1.0], [1.0, 2.0])
    with pytest.raises(MechvalueError):
        bootstrap_ci([])


def test_csr_labels():
    assert csr_labels(["Yes", "no.", "maybe", None, True, 0]).tolist() == [1, 0, 0.5, 0.5, 1, 0]


def test_diversity_metrics():
    texts = ["a b c d", "a b c d"]
    assert distinct_n(texts, 1) == pytest.approx(4 / 8)
    assert distinct_n(texts, 2, per_response=True) == pytest.approx(1.0)
    assert distinct_n(["a a a a"], 1) == pytest.approx(1 / 4)
    more = ead_n(["a b c d e f"], 1, vocab_size=1000)
    less = ead_n(["a a a a a a"], 1, vocab_size=1000)
    assert more > less and more == pytest.approx(6 / (1000 * (1 - (999 / 1000) ** 6)))
    assert repetition_rate(["x y z x y z"], n=3) == pytest.approx(1 / 4)


def test_results_frame_columns():
    df = results_frame([{"method": "m", "metric": "x", "estimate": 1.0, "extra": 3}])
    assert list(df.columns)[:8] == ["method", "target", "value", "metric", "estimate", "ci_low", "ci_high", "n"]
    assert "extra" in df.columns
