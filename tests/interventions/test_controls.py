import numpy as np
import pytest
import torch

from mechvalue.analysis.neurons import NeuronSet
from mechvalue.core.errors import MechvalueError
from mechvalue.interventions.controls import random_like, versus_random
from mechvalue.interventions.install import (
    AblateNeurons,
    AddVector,
    Lambda,
    PerBatch,
    ProjectOut,
    ScaleNeurons,
    intervene,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_neuron_spec_control_keeps_layer_count_and_factors_and_avoids_originals():
    spec = ScaleNeurons(2, [1, 5, 9], torch.tensor([2.0, 3.0, 4.0]), positions="prompt")
    ctrl = random_like(spec, seed=3, d_mlp=20)
    assert isinstance(ctrl, ScaleNeurons) and ctrl.layer == 2 and ctrl.positions == "prompt"
    idx = torch.as_tensor(ctrl.indices).tolist()
    assert len(idx) == 3 and not set(idx) & {1, 5, 9} and all(0 <= i < 20 for i in idx)
    assert torch.equal(torch.as_tensor(ctrl.factor), torch.tensor([2.0, 3.0, 4.0]))
    assert torch.equal(torch.as_tensor(random_like(spec, seed=3, d_mlp=20).indices), torch.as_tensor(idx))
    assert not torch.equal(torch.as_tensor(random_like(spec, seed=4, d_mlp=20).indices), torch.as_tensor(idx))


def test_vector_controls_keep_norm_alpha_and_gate():
    v = torch.randn(16) * 3
    spec = AddVector(1, v, torch.tensor([0.5, 2.0]), gate=[True, False])
    ctrl = random_like(spec, seed=0)
    assert torch.allclose(ctrl.vector.norm(), v.norm()) and abs(float(ctrl.vector @ v) / float(v @ v)) < 0.9
    assert torch.equal(ctrl.alpha, spec.alpha) and ctrl.gate == [True, False]
    po = random_like(ProjectOut(0, v), seed=1)
    assert po.direction.shape == v.shape and not torch.allclose(po.direction, v)
    both = random_like([spec, AblateNeurons(0, [0, 1])], seed=0, d_mlp=8)
    assert isinstance(both[0], AddVector) and isinstance(both[1], AblateNeurons)


def test_neuronset_and_errors():
    ns = NeuronSet(torch.tensor([0, 0, 3]), torch.tensor([1, 2, 7]), torch.ones(3), torch.ones(3, dtype=torch.long),
                   "x")
    ctrl = random_like(ns, seed=0, d_mlp=10)
    assert ctrl.counts_per_layer(4).tolist() == ns.counts_per_layer(4).tolist() and not ctrl.keys() & ns.keys()
    with pytest.raises(MechvalueError, match="d_mlp"):
        random_like(ns)
    with pytest.raises(MechvalueError, match="no matched random control"):
        random_like(Lambda("blocks.0.hook_resid_post", lambda a, h: a))


def _projection_scorer(tokens, u, layer):
    """Per-item projection of the final position's resid_post at ``layer`` on ``u``."""
    def scorer(model, specs):
        out = []

        def grab(act, hook):
            out.append(act[:, -1] @ u)
        with intervene(model, specs), torch.no_grad():
            model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_post", grab)], stop_at_layer=layer + 1)
        return out[0].numpy()
    return scorer


def test_planted_direction_beats_random_and_random_does_not(tiny_model):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(10, 500, (24, 6), generator=g)
    u = torch.randn(tiny_model.cfg.d_model, generator=g)
    u = u / u.norm()
    scorer = _projection_scorer(tokens, u, 1)
    df = versus_random(tiny_model, AddVector(1, u, 4.0), scorer, n_controls=4, method="planted", target="t")
    steered = df[df.arm == "steered"].iloc[0]
    assert steered.estimate == pytest.approx(4.0, abs=1e-3)
    verdict = df[df.arm == "steered_vs_random"].iloc[0]
    assert bool(verdict.beats_random) and verdict.ci_low > 2.0 and verdict.p_rank == pytest.approx(1 / 5)
    assert abs(df[df.arm == "random_mean"].iloc[0].estimate) < 2.0
    assert list(df.columns[:8]) == ["method", "target", "value", "metric", "estimate", "ci_low", "ci_high", "n"]
    # an edit that IS a random direction does not beat its own kind of control
    rnd = random_like(AddVector(1, u, 4.0), seed=99)
    df2 = versus_random(tiny_model, rnd, scorer, n_controls=8, seed=10)
    assert not bool(df2[df2.arm == "steered_vs_random"].iloc[0].beats_random)


def test_per_batch_control_keeps_per_row_push(tiny_model):
    u = torch.zeros(tiny_model.cfg.d_model)
    u[0] = 1.0
    seen = []

    def build(model, examples):
        return [AddVector(0, u, torch.tensor([1.0, 2.0]))]
    ctrl = random_like(PerBatch(build, name="push"), seed=5)
    specs = ctrl.build(tiny_model, [None, None])
    seen.append(specs[0])
    assert torch.equal(seen[0].alpha, torch.tensor([1.0, 2.0]))
    assert torch.allclose(seen[0].vector.norm(), torch.tensor(1.0)) and seen[0].vector[0].abs() < 0.9
    assert "random[push]" in ctrl.name


def test_scorer_shape_mismatch_is_an_error(tiny_model):
    calls = iter([np.zeros(3), np.zeros(4), np.zeros(4)])
    with pytest.raises(MechvalueError, match="same non-empty"):
        versus_random(tiny_model, AddVector(0, torch.ones(tiny_model.cfg.d_model)), lambda m, s: next(calls),
                      n_controls=1)
