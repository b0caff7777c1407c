"""ValueLocate: planted neurons are recovered exactly; manipulation specs; report tables."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model

from mechvalue.core.errors import MechvalueError
from mechvalue.interventions.install import ScaleNeurons, SetNeurons
from mechvalue.lm.collect import collect
from mechvalue.lm.prompts import raw
from mechvalue.methods.valuelocate import (
    ValueLocateConfig,
    baseline_sets,
    dimension_examples,
    locate,
    manipulation_specs,
)

PLANTED = {"openness_to_change": {(1, 3), (1, 7)}, "conservation": {(2, 5)},
           "self_transcendence": {(0, 11)}, "self_enhancement": {(2, 20), (0, 2)}}
TRIGGERS = {"openness_to_change": " apple", "conservation": " river", "self_transcendence": " candle",
            "self_enhancement": " mountain"}


@pytest.fixture(scope="module")
def planted(tokenizer):
    """A tiny model whose only live neurons fire exactly on one trigger token each."""
    model = make_tiny_model(tokenizer, n_layers=3, d_model=32, d_mlp=24, seed=3)
    ids = {d: tokenizer(t, add_special_tokens=False)["input_ids"] for d, t in TRIGGERS.items()}
    assert all(len(v) == 1 for v in ids.values())
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_O.zero_()
            block.mlp.W_gate.zero_()
            block.mlp.W_out.zero_()
        W_E = model.embed.W_E
        W_E[:, :4] = -1.0  # every token is negative on the four trigger coordinates...
        for k, (dim, (tok,)) in enumerate(ids.items()):
            W_E[tok, k] = 1.0  # ...except its own trigger
            for layer, i in PLANTED[dim]:
                model.blocks[layer].mlp.W_gate[k, i] = 5.0
    return model


def _examples(word: str):
    fillers = [" the", " a", " house", " walk", " blue", " today"]
    return [raw(f"{fillers[i % 6]}{fillers[(i + 2) % 6]}{word}{fillers[(i + 4) % 6]}") for i in range(12)]


def test_locate_recovers_exactly_the_planted_neurons(planted):
    stats = {d: collect(planted, _examples(t), span="all", resid=False, progress=False) for d, t in TRIGGERS.items()}
    result = locate(planted, ValueLocateConfig(tau=0.03), stats=stats, progress=False)
    for dim, keys in PLANTED.items():
        assert result.sets[dim].keys() == keys, dim
    assert result.fraction_selected() == pytest.approx(6 / (3 * 24))
    frac = result.fraction_vs_tau((0.01, 0.1, 0.3)).fraction.tolist()
    assert frac[0] >= frac[1] >= frac[2]
    assert result.fraction_vs_tau((0.3,)).n_selected.item() == 0  # trigger is 1 of 4 tokens: delta = 0.25
    counts = result.layer_counts()
    assert counts[counts.set == "openness_to_change"].set_index("layer")["count"].tolist() == [0, 2, 0]
    assert result.overlaps().loc["openness_to_change", "conservation"] == 0.0
    bases = baseline_sets(result, "openness_to_change")
    assert all(len(s) == 2 for s in bases.values())


def test_manipulation_specs(planted):
    stats = {d: collect(planted, _examples(t), span="all", resid=False, progress=False) for d, t in TRIGGERS.items()}
    result = locate(planted, ValueLocateConfig(tau=0.03), stats=stats, progress=False)
    s = result.sets["openness_to_change"]
    (spec,) = manipulation_specs(s, mode="static", gamma=3.0)
    assert isinstance(spec, ScaleNeurons) and spec.layer == 1 and spec.indices.tolist() == [3, 7]
    (dyn,) = manipulation_specs(s, mode="dynamic", lam=2.0)
    assert torch.allclose(torch.as_tensor(dyn.factor), torch.tensor([3.0, 3.0]))  # equal deltas -> 1 + lam
    with_opp = manipulation_specs(s, gamma=2.0, suppress=result.sets["conservation"])
    assert [sp.factor for sp in with_opp] == [2.0, 0.5]
    (mean_spec,) = manipulation_specs(s, mode="set_to_mean", means=stats["openness_to_change"].post_mean)
    assert isinstance(mean_spec, SetNeurons)
    with pytest.raises(MechvalueError):
        manipulation_specs(s, mode="set_to_mean")
    with pytest.raises(MechvalueError):
        manipulation_specs(s, mode="sideways")


def test_config_and_examples():
    with pytest.raises(MechvalueError):
        ValueLocateConfig(input_mode="prose")
    ex = dimension_examples("OPEN", ValueLocateConfig(max_questions=5))
    assert len(ex) == 5 and all(e.system for e in ex)
    assert all(e.system is None for e in dimension_examples("CONS", ValueLocateConfig(input_mode="question",
                                                                                        max_questions=3)))


def test_split_half_null_is_zero_when_halves_agree(planted, monkeypatch):
    import mechvalue.methods.valuelocate as vl

    monkeypatch.setattr(vl, "dimension_examples", lambda dim, config: _examples(TRIGGERS[dim]))
    result = locate(planted, ValueLocateConfig(tau=0.03, span="all"), progress=False)
    for dim, keys in PLANTED.items():  # merged halves give the same sets as one pass
        assert result.sets[dim].keys() == keys, dim
    table = result.fraction_vs_tau((0.03,))
    assert table.fraction.item() == pytest.approx(6 / 72) and table.null_fraction.item() == 0.0
    assert set(result.null_deltas) == {"openness_to_change|conservation", "self_transcendence|self_enhancement"}
    assert result.null_deltas["openness_to_change|conservation"].shape == (2, 3, 24)
