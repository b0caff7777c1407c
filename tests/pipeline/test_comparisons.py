"""The study's paired tests (mechvalue.pipeline.comparisons) and the assigned random controls (study.score_control)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mechvalue.core.values import VALUES
from mechvalue.pipeline.comparisons import TEST_COLUMNS, comparisons
from mechvalue.pipeline.study import StudyConfig, analyse, score_control

TARGETS = ["benevolence", "power", "security"]
N_DIL, N_POR, N_Q = 36, 8, 24


def _records(seed: int = 0, effect: float = 0.5, prompt_effect: float = 1.0):
    """Planted: ``caa`` raises every target's dilemma preference by ``effect`` nats, ``neva`` by exactly nothing (its
    noise is centred), and the value system prompt by ``prompt_effect``; the random controls move nothing."""
    rng = np.random.default_rng(seed)
    recs, ctls = [], []
    for t in TARGETS:
        base_d, base_p = rng.normal(0, 1, N_DIL), rng.uniform(2, 5, N_POR)
        judged = rng.uniform(0.2, 0.4, (N_Q, 10))
        for arm, shift in (("base", 0.0), ("prompting", prompt_effect), ("caa", effect), ("neva", 0.0)):
            noise = rng.normal(0, 0 if arm == "base" else 0.3, N_DIL)
            if arm == "neva":
                noise -= noise.mean()
            j = judged.copy()
            j[:, VALUES.index(t)] += shift / 5
            recs.append({"arm": arm, "target": t, "texts": ["a b"] * N_Q, "judged": j.tolist(), "ppl": [3.0] * N_Q,
                         "dilemma_pref": (base_d + shift + noise).tolist(),
                         "dilemma_win": [1.0] * N_DIL, "portrait_score": (base_p + shift / 2).tolist(),
                         "portrait_value": [t] * N_POR})
            if arm in ("caa", "neva"):
                ctls.append({"arm": arm, "target": t, "n_controls": 10,
                             "dilemma_pref": (base_d + rng.normal(0, 0.3, N_DIL)).tolist(),
                             "portrait_score": (base_p + rng.normal(0, 0.05, N_POR)).tolist()})
    return recs, ctls


def test_planted_effect_is_found_against_base_random_and_prompt_and_the_null_is_not():
    recs, ctls = _records()
    df = comparisons(recs, ctls, TARGETS)
    assert list(df.columns) == list(TEST_COLUMNS)

    def row(arm, metric, comp, target="all"):
        sel = df[(df.method == arm) & (df.metric == metric) & (df.comparison == comp) & (df.target == target)]
        assert len(sel) == 1, (arm, metric, comp, target)
        return sel.iloc[0]

    caa = row("caa", "dilemma", "base")
    assert caa.estimate == pytest.approx(0.5, abs=0.1) and caa.significant and caa.n == 3 * N_DIL
    assert caa.mde < 0.5 and caa.ci_low > 0
    assert row("caa", "dilemma", "random").significant and row("caa", "dilemma", "random").n_controls == 10
    vs_prompt = row("caa", "dilemma", "prompt")
    assert vs_prompt.estimate == pytest.approx(-0.5, abs=0.1) and vs_prompt.significant
    for t in TARGETS:
        assert row("caa", "dilemma", "base", t).significant
        assert not row("neva", "dilemma", "base", t).significant
    assert not row("neva", "dilemma", "base").significant
    assert row("caa", "questionnaire", "base").estimate == pytest.approx(0.25)
    # judged scores have no random controls (they are scored judge-free) and the prompt arm no prompt comparison
    assert df[(df.metric == "judged") & (df.comparison == "random")].empty
    assert df[(df.method == "prompting") & (df.comparison == "prompt")].empty


def test_bh_adjusts_within_a_comparison_and_metric_family():
    from mechvalue.analysis.stats import benjamini_hochberg

    recs, ctls = _records()
    df = comparisons(recs, ctls, TARGETS)
    fam = df[(df.comparison == "base") & (df.metric == "dilemma") & (df.target != "all")]
    assert len(fam) == 3 * len(TARGETS)  # prompting, strong, null x targets: one family
    np.testing.assert_allclose(fam.p_adj, benjamini_hochberg(fam.p.to_numpy()))
    pooled = df[(df.comparison == "base") & (df.metric == "dilemma") & (df.target == "all")]
    np.testing.assert_allclose(pooled.p_adj, benjamini_hochberg(pooled.p.to_numpy()))  # its own family
    assert (df.p_adj >= df.p - 1e-12).all()


def test_analyse_adds_tests_mde_and_questionnaire_gain_to_results():
    recs, ctls = _records()
    tables = analyse(recs, TARGETS, ctls)
    res = tables["results"]
    assert {"mde", "p", "p_adj", "n_controls"} <= set(res.columns)
    assert not res[res.metric == "dilemma_vs_random"].empty
    gain = res[(res.method == "caa") & (res.metric == "dilemma_gain")].iloc[0]
    assert gain.n == 3 * N_DIL and 0 < gain.mde < 0.5
    summary = tables["summary"].set_index("method")
    assert summary.loc["caa", "questionnaire_gain"] == pytest.approx(0.25)
    assert isinstance(tables["tests"], pd.DataFrame)


def test_each_item_meets_one_assigned_random_control(tiny_model, monkeypatch):
    """Item i is scored under control i mod k: the k controls each see their share, in order."""
    import mechvalue.pipeline.study as study
    from mechvalue.data.bundled import load_dilemmas, load_portraits
    from mechvalue.interventions.install import AddVector

    seen = []

    def fake_pref(model, dilemmas, specs, **kw):
        seen.append(("d", [d.id for d in dilemmas], specs[0].alpha))
        return pd.DataFrame({"pref": [float(specs[0].alpha)] * len(dilemmas)})

    def fake_q(model, items, specs, **kw):
        return pd.DataFrame({"score": [float(specs[0].alpha)] * len(items)})

    monkeypatch.setattr(study, "dilemma_preference", fake_pref)
    monkeypatch.setattr(study, "questionnaire", fake_q)
    d, p = load_dilemmas("power")[:7], load_portraits("power")[:5]
    controls = [[AddVector(0, torch.ones(tiny_model.cfg.d_model), float(k))] for k in range(3)]
    row = score_control(tiny_model, "caa", controls, target="power", dilemmas=d, portraits=p, cfg=StudyConfig())
    assert row["dilemma_pref"] == [float(i % 3) for i in range(7)]
    assert row["portrait_score"] == [float(i % 3) for i in range(5)] and row["n_controls"] == 3
    assert [s[1] for s in seen] == [[d[i].id for i in range(j, 7, 3)] for j in range(3)]
