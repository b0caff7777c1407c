"""Activation patching, AtP and DLA (mechvalue.methods.patching) on a tiny model with planted differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechvalue.core.errors import DataError, MechvalueError
from mechvalue.data.bundled import load_dilemmas
from mechvalue.interventions.specs import Lambda, SetNeurons
from mechvalue.lm.patching import align_item
from mechvalue.lm.prompts import chat
from mechvalue.methods.patching import (
    PATCH_COLUMNS,
    atp_validation,
    attribution_patching,
    dilemma_items,
    direct_logit_attribution,
    patch_sweep,
)

SYSTEM = "You value benevolence above everything: caring for the people close to you."


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread."""


@pytest.fixture(scope="module")
def items(tiny_model):
    return dilemma_items(tiny_model, load_dilemmas("benevolence")[:3], source_system=SYSTEM, target_system=None)


@pytest.fixture(scope="module")
def same_prompt(tiny_model):
    return dilemma_items(tiny_model, load_dilemmas("benevolence")[:3], source_system=None, target_system=None)


def test_alignment_is_the_shared_suffix(tiny_model, items):
    it = items[0]
    assert it.shared < min(it.prompt_len) and it.shared >= 5  # the system prompts differ, the question is shared
    for a in (0, 1):
        s, t = it.positions("source", a), it.positions("target", a)
        assert [it.source[a][p] for p in s] == [it.target[a][p] for p in t]
    with pytest.raises(DataError, match="two non-empty answers"):
        align_item(tiny_model.tokenizer, chat("q"), chat("q"), ["only one"])


def test_final_residual_at_every_aligned_position_reproduces_the_source(tiny_model, items):
    last = tiny_model.cfg.n_layers - 1
    df = patch_sweep(tiny_model, items, "resid_post", layers=[last], progress=False)
    assert list(df.columns) == list(PATCH_COLUMNS)
    assert df.normalized_effect.iloc[0] == pytest.approx(1.0, abs=1e-4)
    assert df.attrs["source_metric"] != pytest.approx(df.attrs["target_metric"])
    assert "shared prompt tokens" in df.attrs["alignment"]


def test_patching_identical_runs_gives_zero(tiny_model, same_prompt):
    df = patch_sweep(tiny_model, same_prompt, "mlp_out", layers=[0, 1], progress=False)
    np.testing.assert_allclose(df.effect, 0.0, atol=1e-5)


def _planted_neurons(model):
    return [SetNeurons(1, torch.tensor([3, 7]), torch.tensor([4.0, -3.0]))]


def test_planted_neurons_are_found_by_exact_patching_and_atp(tiny_model, same_prompt):
    src = _planted_neurons(tiny_model)  # the source is the steered model, the target the unsteered one
    mlp = patch_sweep(tiny_model, same_prompt, "mlp_out", layers=[0, 1, 2], source_interventions=src, progress=False)
    by = mlp.set_index("layer").normalized_effect
    assert by[0] == pytest.approx(0.0, abs=1e-6) and by[1] == pytest.approx(1.0, abs=1e-4)
    neu = patch_sweep(tiny_model, same_prompt, "neurons", layers=[1], source_interventions=src, progress=False)
    order = neu.assign(a=neu.effect.abs()).sort_values("a", ascending=False)
    assert set(order.neuron.iloc[:2]) == {3, 7}
    assert order.effect.iloc[2:].abs().max() < 1e-5  # the other neurons do not differ between the runs
    atp = attribution_patching(tiny_model, same_prompt, layers=[1], source_interventions=src, progress=False)
    an = atp[atp.component == "neurons"].assign(a=lambda d: d.effect.abs()).sort_values("a", ascending=False)
    assert set(an.neuron.iloc[:2]) == {3, 7} and an.effect.iloc[2:].abs().max() < 1e-6
    pairs, summary = atp_validation(tiny_model, same_prompt, atp, top=2, n_random=6, source_interventions=src,
                                    progress=False)
    assert set(summary.group) == {"top", "random"} and len(pairs) == 8
    np.testing.assert_allclose(pairs[pairs.group == "random"].exact, 0, atol=1e-5)


def test_planted_head_is_found_first(tiny_model, same_prompt):
    def boost(act, hook):
        act = act.clone()
        act[:, :, 1] *= 5.0
        return act
    src = [Lambda("blocks.1.attn.hook_z", boost)]
    heads = patch_sweep(tiny_model, same_prompt, "heads", layers=[1], source_interventions=src, progress=False)
    top = heads.assign(a=heads.effect.abs()).sort_values("a", ascending=False)
    assert top["head"].iloc[0] == 1 and top.effect.iloc[1:].abs().max() < 1e-5
    atp = attribution_patching(tiny_model, same_prompt, layers=[1], source_interventions=src, progress=False)
    h = atp[atp.component == "heads"].assign(a=lambda d: d.effect.abs()).sort_values("a", ascending=False)
    assert h["head"].iloc[0] == 1


def test_layer_by_position_sweep_has_one_row_per_aligned_position(tiny_model, items):
    df = patch_sweep(tiny_model, items, "resid_pre", layers=[0], positions=True, progress=False)
    k = min(it.shared for it in items)
    assert len(df) == k + 1 and df.position.tolist() == list(range(-k, 0)) + [0]


def test_dla_of_a_planted_direct_writer_ranks_it_first(tiny_model, same_prompt):
    last = tiny_model.cfg.n_layers - 1
    item = same_prompt[0]
    value_tok = item.source[0][item.positions("source", 0, "answer")[0]]
    w_u = tiny_model.W_U[:, value_tok]
    j = int((tiny_model.blocks[last].mlp.W_out @ w_u).argmax())  # the neuron writing most toward the answer
    src = [SetNeurons(last, torch.tensor([j]), torch.tensor([20.0]))]
    df = direct_logit_attribution(tiny_model, same_prompt[:1], layers=[last], interventions=src, progress=False)
    neu = df[df.component == "neurons"].sort_values("effect", ascending=False)
    assert neu.neuron.iloc[0] == j and neu.effect.iloc[0] > 0
    assert set(df.component) == {"neurons", "heads"} and (df.method == "dla").all()


def test_bad_inputs_are_refused(tiny_model, items):
    with pytest.raises(MechvalueError, match="unknown component 'cats'"):
        patch_sweep(tiny_model, items, "cats", progress=False)
    with pytest.raises(MechvalueError, match="at least one item"):
        patch_sweep(tiny_model, [], "mlp_out", progress=False)
    with pytest.raises(MechvalueError, match="no hook"):
        patch_sweep(tiny_model, items, "mlp_out", layers=[99], progress=False)


def test_atp_is_the_first_order_term_of_exact_patching(tiny_model, same_prompt):
    """For a small source-target difference (a tiny steering vector at layer 1) AtP per layer and position, per
    neuron and per head equals exact patching to first order."""
    from mechvalue.interventions.specs import AddVector

    v = torch.randn(tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    src = [AddVector(1, v, 0.02)]
    atp = attribution_patching(tiny_model, same_prompt, layers=[2], resid=True, source_interventions=src,
                               progress=False)
    r = atp[atp.component == "resid_pre"]
    k = min(it.shared for it in same_prompt)
    assert len(r) == k + 1 and r.position.tolist() == list(range(-k, 0)) + [0]
    exact = patch_sweep(tiny_model, same_prompt, "resid_pre", layers=[2], positions=True, source_interventions=src,
                        progress=False)
    assert np.corrcoef(r.effect, exact.effect)[0, 1] > 0.99
    np.testing.assert_allclose(r.effect, exact.effect, atol=0.05 * np.abs(exact.effect).max())
    heads = patch_sweep(tiny_model, same_prompt, "heads", layers=[2], source_interventions=src, progress=False)
    h = atp[atp.component == "heads"]
    assert np.corrcoef(h.effect, heads.effect)[0, 1] > 0.99
