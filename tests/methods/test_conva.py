"""ConVA: layer rule, probe vectors on the tiny model, the sequential closed-form push lands at P0."""

from __future__ import annotations

import pytest
import torch

from mechvalue.core.errors import MechvalueError
from mechvalue.core.hooks import resid_hook
from mechvalue.data.bundled import ContrastPair
from mechvalue.interventions.install import RunContext, intervene
from mechvalue.lm.generation import generate
from mechvalue.lm.prompts import chat, tokenize
from mechvalue.methods.conva import (
    P0,
    ValueVectors,
    caa,
    conva,
    negative_prompt,
    push_specs,
    select_layers,
    train_value_vectors,
)


def test_select_layers_rule():
    acc = [0.5, 0.8, 0.95, 0.85, 0.97, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99]
    # > 0.9 and not among the last five (indices 7..11): 2 and 4..6 -> contiguous 2..6
    assert select_layers(acc, 12) == [2, 3, 4, 5, 6]
    assert select_layers([0.5] * 12, 12) == []


def _pairs(n=24):
    pos = [f"I always help my neighbour with the {w} because caring matters." for w in
           ("garden", "roof", "car", "dog", "shopping", "move", "fence", "boxes", "kitchen", "paint", "bike", "tree")]
    neg = [p.replace("always help", "never help").replace("because caring matters", "because it bores me")
           for p in pos]
    rows = [ContrastPair(f"b-{k}", "benevolence", pos[k % 12] + ("" if k < 12 else " Truly."),
                         neg[k % 12] + ("" if k < 12 else " Truly."), "train" if k % 4 else "test")
            for k in range(n)]
    return rows


@pytest.fixture(scope="module")
def vectors(tiny_model):
    return train_value_vectors(tiny_model, "benevolence", _pairs(), threshold=0.5, exclude_last=1)


def test_train_value_vectors_shapes_and_roundtrip(vectors, tiny_model, tmp_path):
    n = tiny_model.cfg.n_layers
    assert vectors.w.shape == (n, tiny_model.cfg.d_model) and vectors.accuracy.shape == (n,)
    assert torch.allclose(vectors.direction(0).norm(), torch.tensor(1.0))
    path = vectors.save(tmp_path / "v.safetensors")
    again = ValueVectors.load(path, model=tiny_model)
    assert torch.equal(again.w, vectors.w) and again.selected == vectors.selected


def test_push_lands_probe_at_p0_on_every_layer(vectors, tiny_model):
    examples = [chat("Should I help my neighbour today?"), chat("What is two plus two?"), chat("Hi")]
    layers = [0, 1]
    specs = push_specs(tiny_model, vectors, examples, p0=0.93, layers=layers)
    batch = tokenize(tiny_model.tokenizer, examples, span="last", skip_special=False)
    ctx = RunContext.from_batch(batch.attention_mask, batch.prompt_mask)
    with intervene(tiny_model, specs, context=ctx):
        _, cache = tiny_model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask)
    rows = torch.arange(len(examples))
    for layer in layers:
        e = cache[resid_hook(layer)][rows, batch.last_read]
        p = vectors.probe(layer).prob(e)
        # pushed rows land at P0; rows already above P0 are left alone
        assert ((p - 0.93).abs() < 1e-3).logical_or(p > 0.93).all()
    gated = push_specs(tiny_model, vectors, examples, p0=0.93, layers=layers, gate=[True, False, True])
    assert all(float(s.alpha[1]) == 0.0 for s in gated)


def test_conva_per_batch_in_generation_and_caa(vectors, tiny_model):
    prompts = ["Should I help?", "Tell me a joke about cats please", "Hi"]
    steer = conva(vectors, p0=0.99, layers=[0, 1])
    batched = generate(tiny_model, prompts, steer, max_new_tokens=3, batch_size=2).texts
    single = [generate(tiny_model, [p], steer, max_new_tokens=3).texts[0] for p in prompts]
    assert batched == single
    specs = caa(vectors, 2.0, layers=[0])
    assert len(specs) == 1 and specs[0].alpha == 2.0


def test_errors_and_helpers(tiny_model):
    with pytest.raises(MechvalueError):
        train_value_vectors(tiny_model, "benevolence", _pairs()[:3])
    with pytest.raises(MechvalueError):
        train_value_vectors(tiny_model, "benevolence", _pairs(), template="jinja")
    assert set(P0) == {"achievement", "stimulation", "hedonism", "self_direction", "power", "security",
                       "tradition", "conformity", "benevolence", "universalism"}
    assert negative_prompt("SD").startswith("You have low level of self-direction.")


def test_best_window_fallback_when_no_layer_passes():
    from mechvalue.methods.conva import best_window, fit_value_vectors

    acc = [0.5, 0.6, 0.8, 0.85, 0.82, 0.6, 0.9, 0.95, 0.99, 0.99, 0.99, 0.99]  # the best are in the last five
    assert best_window(acc, 12, width=3, exclude_last=5) == [2, 3, 4]
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 2 * (8 + 4), 6, generator=g)  # pure noise: no layer passes 0.9
    vv = fit_value_vectors(feats, 8, 4, value="power", layers=[0, 1], n_layers=8, exclude_last=5,
                           fallback_width=2)
    assert vv.selected == [0, 1] and vv.meta["selection"] == "best_window"
    none = fit_value_vectors(feats, 8, 4, value="power", layers=[0, 1], n_layers=8, fallback_width=None)
    assert none.selected == [] and none.meta["selection"] == "threshold"
    with pytest.raises(MechvalueError, match="features must be"):
        fit_value_vectors(feats[:, :5], 8, 4, value="power", layers=[0, 1], n_layers=8)


def test_best_window_on_a_model_shallower_than_the_exclusion():
    from mechvalue.methods.conva import best_window

    assert best_window([0.6, 0.7, 0.8], 3, width=3, exclude_last=5) == [0]


def test_saved_vectors_refuse_a_model_with_other_processing_or_dtype(tiny_model, tmp_path):
    import types

    from mechvalue.core.errors import CorruptFileError
    from mechvalue.lm.models import artifact_model
    from mechvalue.methods.conva import ValueVectors, fit_value_vectors

    g = torch.Generator().manual_seed(0)
    n, d = 8, tiny_model.cfg.d_model
    feats = torch.randn(tiny_model.cfg.n_layers, 4 * n, d, generator=g)
    feats[:, :n, 0] += 3.0  # train positives
    feats[:, 2 * n:3 * n, 0] += 3.0  # test positives
    vv = fit_value_vectors(feats, n, n, value="power", layers=list(range(tiny_model.cfg.n_layers)),
                           n_layers=tiny_model.cfg.n_layers, meta={**artifact_model(tiny_model), "template": "raw"})
    path = tmp_path / "power.safetensors"
    vv.save(path)
    assert ValueVectors.load(path, model=tiny_model).value == "power"
    for change, side in (({"processing": "fold_ln"}, "processing='fold_ln'"), ({"dtype": torch.float16}, "float16")):
        info = {**tiny_model.mechvalue_info, **{k: v for k, v in change.items() if k != "dtype"}}
        cfg = types.SimpleNamespace(n_layers=tiny_model.cfg.n_layers, d_model=d, d_mlp=tiny_model.cfg.d_mlp,
                                    dtype=change.get("dtype", torch.float32))
        with pytest.raises(CorruptFileError, match=f"but the model has .*{side}"):
            ValueVectors.load(path, model=types.SimpleNamespace(cfg=cfg, mechvalue_info=info))
