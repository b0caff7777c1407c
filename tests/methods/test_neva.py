"""NeVA (reconstructed): planted neurons recovered by sparse, specific probes; the edit lands at P0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechvalue.core.errors import MechvalueError
from mechvalue.interventions.install import Lambda, ProbePush
from mechvalue.methods.neva import edit_specs, fit_neuron_probes, select_neurons, specificity

LAYERS = [4, 5]
D = 40
PLANT = {"benevolence": [(4, 3)], "power": [(5, 8)]}
SHARED = (4, 30)  # carries both values' labels: specificity should drop it


def synthetic(n=160, seed=0):
    rng = np.random.default_rng(seed)
    feats = torch.tensor(rng.normal(size=(len(LAYERS), 2 * n, D)), dtype=torch.float32)
    owner = ["benevolence"] * n + ["power"] * n
    label = np.tile(np.r_[np.ones(n // 2), np.zeros(n // 2)], 2).astype(int)
    split = np.where(np.arange(2 * n) % 5 == 0, "test", "train")
    for v, neurons in PLANT.items():
        rows = np.array([o == v for o in owner])
        for layer, i in neurons:
            feats[LAYERS.index(layer), rows, i] += torch.tensor(3.0 * (2 * label[rows] - 1), dtype=torch.float32)
    return feats, owner, label, split


@pytest.fixture(scope="module")
def probes():
    feats, owner, label, split = synthetic()
    return fit_neuron_probes(feats, owner, label, split, LAYERS, C=0.05)


def test_probes_recover_planted_neurons(probes):
    sets = select_neurons(probes, budget=1, lam=1.0)
    assert sets["benevolence"].keys() == set(PLANT["benevolence"])
    assert select_neurons(probes, budget=1, lam=1.0)["power"].keys() == {(5, 8)}
    assert probes.accuracy["benevolence"].max() > 0.9
    assert set(sets["benevolence"].signs.tolist()) == {1}


def test_specificity_drops_a_neuron_shared_by_two_values(probes):
    from dataclasses import replace

    w_b, w_p = torch.zeros(2, D), torch.zeros(2, D)
    w_b[0, 3], w_p[1, 8] = 1.0, 1.0
    w_b[0, 30], w_p[0, 30] = 1.5, 1.5  # SHARED loads on both probes, more than either own neuron
    shared = replace(probes, weights={"benevolence": w_b, "power": w_p})
    assert select_neurons(shared, budget=1, lam=0.0)["power"].keys() == {SHARED}
    assert select_neurons(shared, budget=1, lam=1.0)["power"].keys() == {(5, 8)}
    assert select_neurons(shared, budget=1, lam=1.0)["benevolence"].keys() == {(4, 3)}


def test_specificity_formula():
    w = {"a": torch.tensor([[1.0, 0.5]]), "b": torch.tensor([[0.8, 0.0]])}
    s = specificity(w, lam=0.5)
    assert torch.allclose(s["a"], torch.tensor([[1.0 - 0.4, 0.5]]))
    assert torch.allclose(s["b"], torch.tensor([[0.8 - 0.5, -0.25]]))


def test_probe_push_edit_lands_at_p0(probes):
    sets = select_neurons(probes, budget=3, lam=0.0)
    specs = edit_specs(probes, sets["benevolence"], p0=0.9)
    assert all(isinstance(s, ProbePush) for s in specs) and len(specs) >= 1
    for spec in specs:
        layer = int(spec.hook.split(".")[1])
        x = probes.features["benevolence"][probes.layers.index(layer)][None]  # [1, n, d_mlp]
        sel = torch.ones(x.shape[:2], dtype=torch.bool)
        out = spec.edit(x, sel)
        idx = torch.as_tensor(spec.indices)
        z = ((out[0][:, idx] - spec.mean) / spec.scale) @ spec.w + spec.b
        before = ((x[0][:, idx] - spec.mean) / spec.scale) @ spec.w + spec.b
        target = np.log(0.9 / 0.1)
        assert torch.allclose(z[before < target], torch.tensor(target, dtype=torch.float32), atol=1e-3)
        assert torch.equal(out[0][before >= target], x[0][before >= target])
        untouched = torch.ones(D, dtype=torch.bool)
        untouched[idx] = False
        assert torch.equal(out[..., untouched], x[..., untouched])
    one = select_neurons(probes, budget=1, lam=1.0)["power"]
    (sp,) = edit_specs(probes, one, rule="sign_push")
    assert isinstance(sp, Lambda)
    with pytest.raises(MechvalueError):
        edit_specs(probes, sets["power"], p0=1.2)
    with pytest.raises(MechvalueError):
        edit_specs(probes, sets["power"], rule="magic")


def test_a_value_whose_probes_keep_nothing_gets_an_empty_set_not_an_error(probes):
    import dataclasses

    zeroed = dataclasses.replace(probes, weights={**probes.weights, "power": torch.zeros_like(probes.weights["power"])})
    with pytest.warns(UserWarning, match="kept no neuron"):
        sets = select_neurons(zeroed, budget=1, lam=1.0)
    assert len(sets["power"]) == 0 and sets["power"].meta["empty"]
    assert sets["benevolence"].keys() == set(PLANT["benevolence"])
    assert edit_specs(zeroed, sets["power"]) == []
