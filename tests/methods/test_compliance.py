"""The compliance experiment: directions, ability bands, paired rows and the verdict on planted outcomes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mechvalue.core.errors import MechvalueError
from mechvalue.methods.compliance import (
    ComplianceConfig,
    ability_bands,
    compliance_directions,
    compliance_rows,
    refusal_detector,
    verdict,
)


def test_directions_are_the_mean_delta_and_same_norm_controls():
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(16, generator=g)
    deltas = shared + 0.3 * torch.randn(4, 16, generator=g)  # a planted common direction
    dirs = compliance_directions(deltas, ["a", "b", "c", "d"], 5.0, n_random=3, seed=1)
    assert list(dirs) == ["mean_delta", "random:0", "random:1", "random:2", "value:a", "value:b", "value:c", "value:d"]
    assert all(abs(float(v.norm()) - 5.0) < 1e-4 for v in dirs.values())
    assert torch.cosine_similarity(dirs["mean_delta"], shared, 0) > 0.95
    assert abs(float(torch.cosine_similarity(dirs["random:0"], shared, 0))) < 0.7
    with pytest.raises(MechvalueError, match="finite"):
        compliance_directions(deltas[:, :1] * float("nan"), ["a", "b", "c", "d"], 1.0, n_random=0, seed=0)


def _outcomes(seed: int = 0, gain_within: float = 0.5, random_gain: float = 0.0) -> pd.DataFrame:
    """Planted: 3 instruction types (easy 60%, medium 20%, hard 0%), 40 prompts each; 60 refusal requests."""
    rng = np.random.default_rng(seed)
    rows = []
    base_rate = {"easy": 0.6, "medium": 0.2, "hard": 0.0}
    arms = {"base": (0.0, 0.0, 0.8), "mean_delta@0.5": (0.5, gain_within, 0.3), "random:0": (0.5, random_gain, 0.8)}
    for arm, (alpha, gain, refuse) in arms.items():
        for t, p in base_rate.items():
            for i in range(40):
                rate = min(1.0, p + (gain if t == "easy" else 0.0))
                rows.append({"arm": arm, "alpha": alpha, "kind": "instruction", "id": f"{t}-{i}", "instruction": t,
                             "followed": float(rng.random() < rate), "refusal_prefix": np.nan,
                             "refusal_classifier": np.nan, "log_ppl": 2.0, "empty": False})
        for i in range(60):
            r = float(rng.random() < refuse)
            rows.append({"arm": arm, "alpha": alpha, "kind": "refusal", "id": f"r-{i}", "instruction": "",
                         "followed": np.nan, "refusal_prefix": r, "refusal_classifier": r, "log_ppl": 2.5,
                         "empty": False})
    return pd.DataFrame(rows)


def test_bands_follow_the_unsteered_pass_rate():
    bands = ability_bands(_outcomes(), within=0.3, beyond=0.1).set_index("instruction")
    assert bands.band.to_dict() == {"easy": "within", "hard": "beyond", "medium": "middle"}
    assert bands.n.tolist() == [40, 40, 40]


def test_the_verdict_holds_on_the_planted_pattern_and_fails_without_it():
    out = _outcomes()
    res = compliance_rows(out, ability_bands(out, 0.3, 0.1))
    within = res[(res.target == "mean_delta@0.5") & (res.metric == "follow_within")].iloc[0]
    assert within.delta > 0.3 and within.delta_low > 0 and within.n == 40
    v = verdict(res, "mean_delta@0.5")
    assert v["holds"] is True and all(v["parts"].values())
    flat = _outcomes(gain_within=0.0)  # no gain within ability: the pattern does not hold
    res = compliance_rows(flat, ability_bands(flat, 0.3, 0.1))
    v = verdict(res, "mean_delta@0.5")
    assert v["holds"] is False and v["parts"]["following_within_up"] is False
    lucky = _outcomes(random_gain=0.6)  # a random direction does as well: not specific
    res = compliance_rows(lucky, ability_bands(lucky, 0.3, 0.1))
    assert verdict(res, "mean_delta@0.5")["parts"]["above_random"] is False


def test_an_unaudited_refusal_detector_leaves_the_verdict_undecided():
    out = _outcomes()
    res = compliance_rows(out, ability_bands(out, 0.3, 0.1))
    v = verdict(res, "mean_delta@0.5", refusal_metric=None)
    assert v["parts"]["refusals_down"] is None and v["holds"] is None and v["numbers"]["refusal"] is None
    assert verdict(res, "mean_delta@0.5", "refusal_prefix")["numbers"]["refusal"]["delta"] < 0
    good, poor = {"balanced_accuracy": 0.9}, {"balanced_accuracy": 0.5}
    assert refusal_detector({"refusal_classifier": poor, "refusal_prefix": good}, 0.75) == "refusal_prefix"
    assert refusal_detector({"refusal_classifier": good, "refusal_prefix": good}, 0.75) == "refusal_classifier"
    assert refusal_detector({"refusal_classifier": poor, "refusal_prefix": {"balanced_accuracy": np.nan}}, 0.75) \
        is None
    assert refusal_detector({}, 0.75) is None


def test_config_checks():
    with pytest.raises(MechvalueError, match="doses"):
        ComplianceConfig(doses=(0.5, -1.0))
    with pytest.raises(MechvalueError, match="beyond"):
        ComplianceConfig(within=0.1, beyond=0.3)
    with pytest.raises(MechvalueError, match="min_detector_accuracy"):
        ComplianceConfig(min_detector_accuracy=0.3)
    with pytest.raises(MechvalueError, match="n_fluency"):
        ComplianceConfig(n_fluency=-1)
    assert ComplianceConfig.quick().n_instructions > 0


def test_run_compliance_end_to_end_and_resume(tiny_model, tmp_path, monkeypatch):
    """The whole experiment on a tiny random model with the bundled prompts: files, rows, verdict, resume."""
    import mechvalue.methods.compliance as comp
    from mechvalue.methods.compliance import run_compliance

    g = torch.Generator().manual_seed(0)
    deltas = torch.randn(3, tiny_model.cfg.d_model, generator=g)
    cfg = ComplianceConfig(doses=(0.5,), n_instructions=24, n_refusals=8, n_random=1, n_value_controls=1,
                           max_new_tokens=6, max_new_tokens_refusal=4, n_fluency=5)
    out = run_compliance(tiny_model, deltas, ["power", "benevolence", "security"], 1, 3.0, tmp_path, cfg,
                         batch_size=8, progress=False)
    arms = ["base", "mean_delta@0.5", "random:0", "value:power"]
    assert list(out["results"].target.unique()) == arms
    for f in ("doses.csv", "responses.jsonl", "outcomes.csv", "bands.csv", "results.csv", "classifier.json",
              "verdict.json"):
        assert (tmp_path / f).exists(), f
    o = out["outcomes"]
    assert len(o) == 4 * (24 + 8) and o[o.kind == "instruction"].followed.isin([0.0, 1.0]).all()
    assert set(o[o.kind == "refusal"].refusal_prefix.dropna().unique()) <= {0.0, 1.0}
    scored = o[o.log_ppl.notna()]  # fluency on n_fluency prompts per kind, the same ones in every arm
    assert np.isfinite(scored.log_ppl).all() and (scored.groupby("arm").size() == 2 * 5).all()
    assert scored.groupby("arm").apply(lambda g: frozenset(zip(g.kind, g.id))).nunique() == 1
    ppl = out["results"][out["results"].metric == "log_ppl"]
    assert (ppl.n == 10).all() and (ppl[ppl.target == "base"].delta == 0).all()
    assert out["verdict"]["arm"] == "mean_delta@0.5" and out["verdict"]["chosen_passed_mmlu_cap"] is None
    calls = []
    monkeypatch.setattr(comp, "generate", lambda *a, **k: calls.append(1))
    again = run_compliance(tiny_model, deltas, ["power", "benevolence", "security"], 1, 3.0, tmp_path, cfg,
                           batch_size=8, progress=False)
    assert not calls and again["results"].equals(out["results"])  # every response read back, none regenerated
