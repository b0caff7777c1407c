import numpy as np
import pytest
import torch

from mechvalue.analysis.metrics import nlr
from mechvalue.core.errors import MechvalueError
from mechvalue.core.values import VALUES
from mechvalue.interventions.install import AddVector, PerBatch
from mechvalue.methods.registry import gated
from mechvalue.pipeline.study import analyse, leakage_matrix, nlr_ci, prompt_gate

TARGETS = ["benevolence", "power"]


def _records(gain: float = 0.4, leak: float = 0.1, n: int = 6, seed: int = 0):
    """Synthetic study records: steering a target raises it by ``gain``; ``conva`` also raises the
    target's circumplex neighbours by ``leak``; ``neva`` leaks nothing."""
    rng = np.random.default_rng(seed)
    recs = []
    for t in TARGETS:
        base = rng.uniform(0.1, 0.4, size=(n, 10))
        ti = VALUES.index(t)
        for arm in ("base", "conva", "neva"):
            j = base.copy()
            if arm != "base":
                j[:, ti] += gain
            if arm == "conva":
                j[:, (ti - 1) % 10] += leak
                j[:, (ti + 1) % 10] += leak
            recs.append({"arm": arm, "target": t, "texts": ["a b c"] * n, "judged": j.tolist(), "ppl": [5.0] * n,
                         "dilemma_pref": list(rng.normal(1.0 if arm != "base" else 0.0, 0.1, 4)),
                         "dilemma_win": [1.0, 1.0, 0.0, 1.0], "mmlu": [1.0, 0.0, 1.0, 1.0]})
    return recs


def test_planted_leakage_gives_hand_computed_matrix_and_nlr():
    tables = analyse(_records(), TARGETS)
    conva = tables["leakage_conva"]
    for t in TARGETS:
        ti = VALUES.index(t)
        row = conva.loc[t].to_numpy()
        expected = np.zeros(10)
        expected[ti] = 0.4
        expected[(ti - 1) % 10] = expected[(ti + 1) % 10] = 0.1
        np.testing.assert_allclose(row, expected, atol=1e-9)
    # NLR by hand: (2 x 0.1) / 9 off-target values / 0.4 gain
    summary = tables["summary"].set_index("method")
    assert summary.loc["conva", "nlr"] == pytest.approx(0.2 / 9 / 0.4)
    assert summary.loc["neva", "nlr"] == pytest.approx(0.0)
    assert summary.loc["conva", "judged_gain"] == pytest.approx(0.4)
    assert summary.loc["conva", "dilemma_gain"] > 0.5 and summary.loc["base", "dilemma_gain"] == 0
    # leakage stays in the neighbours: target->group NGLR > 1 for the target's own higher-order group
    ng = tables["nglr_target_group_conva"]
    assert ng.loc["benevolence", "TRAN"] > 1 and ng.loc["power", "ENH"] > 1
    assert {"summary", "results", "radar"} <= set(tables)
    res = tables["results"]
    assert set(res.columns[:8]) == {"method", "target", "value", "metric", "estimate", "ci_low", "ci_high", "n"}


def test_nlr_ci_covers_the_point_and_matches_metrics():
    recs = _records()
    from mechvalue.pipeline.study import judged_array

    s, b = judged_array(recs, "conva", TARGETS), judged_array(recs, "base", TARGETS)
    per_t, (m, lo, hi) = nlr_ci(s, b, TARGETS, n_boot=100)
    np.testing.assert_allclose(per_t, nlr(leakage_matrix(s, b), TARGETS, VALUES))
    assert lo <= m <= hi


def test_analyse_errors():
    with pytest.raises(MechvalueError, match="base arm"):
        analyse([r for r in _records() if r["arm"] != "base"], TARGETS)
    with pytest.raises(MechvalueError, match="target, query, value"):
        leakage_matrix(np.zeros((2, 3)), np.zeros((2, 3)))


class _FakeJudge:
    def relevance(self, texts, value):
        return np.array([0.9 if value in t else 0.1 for t in texts])


def test_prompt_gate_and_gated_per_batch():
    gate = prompt_gate(_FakeJudge(), "power", 0.5)
    assert gate(["about power", "about cats"]).tolist() == [True, False]
    with pytest.raises(MechvalueError, match="threshold"):
        prompt_gate(_FakeJudge(), "power", 1.5)
    seen = []

    def build(mask):
        seen.append(mask)
        return [AddVector(0, torch.ones(4), 1.0, gate=mask)]

    class Ex:
        def __init__(self, user):
            self.user = user
    pb = gated(build, gate, "x")
    assert isinstance(pb, PerBatch)
    specs = pb.build(None, [Ex("power!"), Ex("nothing")])
    assert seen[0].tolist() == [True, False] and specs[0].gate.tolist() == [True, False]
