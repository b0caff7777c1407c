"""Planted-signal tests for the dual-mechanism vectors, axes, neuron classes and structure
(mechvalue.methods.dual_vectors, re-exported by mechvalue.methods.dual)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_tiny_model
from dual_helpers import WordJudge, basis, make_rows, make_vectors

from mechvalue.analysis.neurons import angle_class_table, angle_classes
from mechvalue.core.errors import CorruptFileError, MechvalueError
from mechvalue.core.values import VALUES
from mechvalue.methods.dual import (
    DualConfig,
    DualVectors,
    contrast_groups,
    dual_axes,
    label_responses,
    neuron_classes,
    response_features,
    structure,
    value_vectors,
)

# ------------------------------------------------------------------ axes and orthogonalisation


def test_planted_shared_component_gives_axes_signs_and_cosines():
    d = 16
    s, t = 3 * basis(d, 0), basis(d, 1)
    v_int, v_prompt = s + 2 * t, s - 2 * t  # shared part s, opposite unique parts +-2t
    vec = make_vectors(v_int[None, None], v_prompt[None, None])
    ax = vec.axes("benevolence", 0)
    assert torch.allclose(ax.shared, basis(d, 0), atol=1e-6)
    assert torch.allclose(ax.intrinsic, t, atol=1e-6) and torch.allclose(ax.prompted, -t, atol=1e-6)
    shared, unique = dual_axes(vec)
    assert torch.allclose(shared[0, 0], ax.shared) and torch.allclose(unique[0, 0], ax.intrinsic)
    # flipping both vectors flips the shared axis (it follows v_int + v_prompt)
    assert torch.allclose(make_vectors(-v_int[None, None], -v_prompt[None, None]).axes("benevolence", 0).shared,
                          -basis(d, 0), atol=1e-6)
    row = vec.cosines().iloc[0]
    cos = 5 / 13
    assert row.cos_intrinsic_prompted == pytest.approx(cos, abs=1e-6)
    assert row.retained_norm_prompted_perp == pytest.approx(math.sqrt(1 - cos ** 2), abs=1e-6)
    assert row.retained_norm_intrinsic_perp == pytest.approx(math.sqrt(1 - cos ** 2), abs=1e-6)
    assert torch.allclose(vec.get("prompted_perp", "benevolence", 0) @ v_int, torch.tensor(0.0), atol=1e-5)
    # unnormalised variant: the shared axis leans toward the longer (here prompted) vector
    raw = make_vectors(v_int[None, None], 3 * v_prompt[None, None]).axes("benevolence", 0, normalize=False)
    assert raw.shared @ basis(d, 0) > 0.8 and raw.shared @ t < -0.3
    assert raw.intrinsic @ (v_int - 3 * v_prompt) > 0


# ------------------------------------------------------------------ neuron classes


def _planted_w_out(d_model: int, d_mlp: int):
    """Rows at known angles (degrees, in the (shared, intrinsic) plane) with norm 5; the rest tiny noise."""
    g = torch.Generator().manual_seed(0)
    w = 1e-3 * torch.randn(d_mlp, d_model, generator=g)
    vec = make_vectors((3 * basis(d_model, 0) + 2 * basis(d_model, 1))[None, None],
                       (3 * basis(d_model, 0) - 2 * basis(d_model, 1))[None, None])
    ax = vec.axes("benevolence", 0)
    planted = {3: (0, "shared"), 7: (20, "shared"), 11: (90, "intrinsic"), 12: (110, "intrinsic"),
               20: (-90, "prompted"), 21: (-65, "prompted"), 30: (45, "unassigned"), 31: (180, "unassigned")}
    for i, (deg, _) in planted.items():
        t = math.radians(deg)
        w[i] = 5 * (math.cos(t) * ax.shared + math.sin(t) * ax.intrinsic)
    return w, vec, ax, planted


def test_planted_w_out_rows_are_classified_exactly():
    w, _, ax, planted = _planted_w_out(32, 48)
    cls = angle_classes(w, ax, top_frac=len(planted) / 48, max_angle=30.0)
    df = angle_class_table(cls, value="benevolence", layer=0).set_index("neuron")
    assert set(df.index) == set(planted)
    for i, (_, name) in planted.items():
        assert df.loc[i, "class"] == name
        assert df.loc[i, "proj_norm"] == pytest.approx(5.0, abs=1e-3)
    assert df.loc[7, "angle"] == pytest.approx(20.0, abs=0.05)
    assert df.loc[21, "angle"] == pytest.approx(25.0, abs=0.05)
    assert df.loc[30, "angle"] == pytest.approx(45.0, abs=0.05)
    unsigned = angle_class_table(angle_classes(w, ax, top_frac=len(planted) / 48, signed=False), value="b", layer=0)
    assert unsigned.set_index("neuron").loc[31, "class"] == "shared"  # |cos|: a row along -u_shared counts


def test_neuron_classes_reads_the_models_w_out_and_refuses_other_processing(tokenizer):
    model = make_tiny_model(tokenizer, seed=3)
    w, vec, _, planted = _planted_w_out(model.cfg.d_model, model.cfg.d_mlp)
    vec = DualVectors(vec.values, [1], vec.intrinsic, vec.prompted, {**vec.meta, "model_id": "tiny-3"})
    with torch.no_grad():
        model.blocks[1].mlp.W_out.copy_(w)
    df, counts = neuron_classes(model, vec, layer=1, top_frac=len(planted) / model.cfg.d_mlp)
    assert counts.iloc[0][["shared", "intrinsic", "prompted", "unassigned"]].tolist() == [2, 2, 2, 2]
    assert dict(zip(df.neuron, df["class"])) == {i: c for i, (_, c) in planted.items()}
    model.mechvalue_info = {"model_id": "tiny-3", "processing": "fold_ln"}
    with pytest.raises(MechvalueError, match="weight processing"):
        neuron_classes(model, vec, layer=1)


# ------------------------------------------------------------------ value vectors


def test_planted_direction_in_one_condition_is_recovered(tokenizer, tmp_path):
    """Token embeddings carry planted directions: u for the intrinsic marker, w for the prompted one."""
    model = make_tiny_model(tokenizer, seed=1)
    d = model.cfg.d_model
    g = torch.Generator().manual_seed(1)
    u = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    z = torch.randn(d, generator=g)
    z = torch.nn.functional.normalize(z - (z @ u) * u, dim=0)
    w = (u + z) / math.sqrt(2)  # shares u, plus a unique part z
    ids = {t: tokenizer(t, add_special_tokens=False)["input_ids"] for t in (" kind", " warm", " table")}
    assert all(len(v) == 1 for v in ids.values())
    with torch.no_grad():
        model.embed.W_E[ids[" kind"][0]] += 40 * u
        model.embed.W_E[ids[" warm"][0]] += 40 * w
    intr = make_rows(8, "intrinsic", None,
                     [" table kind table kind table kind", " table table table table table table"])
    prom = make_rows(8, "prompted", "benevolence", [" table warm table warm table warm", " table table table table"])
    rows = intr + prom
    judge = WordJudge({"benevolence": "kind"})
    judge.judge = lambda texts, value: np.array([float(("kind" in t) or ("warm" in t)) for t in texts])
    labels = label_responses(rows, judge, ["benevolence"], tmp_path / "labels.jsonl")
    layers = [0, 1, 2]
    feats = response_features(model, rows, layers, batch_size=8, progress=False)
    assert feats.shape == (16, 3, d)
    vec = value_vectors(feats, rows, labels, ["benevolence"], layers, meta={"model_id": "tiny-1"})
    assert [g["rule"] for g in vec.meta["groups"]] == ["labels", "labels"]
    for j in range(3):
        v_int, v_prompt = vec.intrinsic[0, j], vec.prompted[0, j]
        assert torch.nn.functional.cosine_similarity(v_int, u, dim=0) > 0.95
        assert torch.nn.functional.cosine_similarity(v_prompt, w, dim=0) > 0.95
        assert vec.pair.cos[0, j] == pytest.approx(1 / math.sqrt(2), abs=0.06)
        shared = vec.axes("benevolence", layers[j]).shared
        assert torch.nn.functional.cosine_similarity(shared, u + w, dim=0) > 0.95


def _labels(rows, scores):
    return pd.DataFrame({"id": [r["id"] for r in rows], "condition": [r["condition"] for r in rows],
                         "value": "benevolence", "judge": "x", "score": scores,
                         "label": (np.asarray(scores) >= 0.5).astype(int)})


def test_contrast_groups_fall_back_along_the_recorded_chain():
    intr = make_rows(6, "intrinsic", None, ["a"])
    prom = make_rows(6, "prompted", "benevolence", ["b"])
    rows = intr + prom
    # intrinsic all exp by label -> split by score around the median; prompted all exp -> vs intrinsic unexp
    lab = _labels(rows, [0.9, 0.8, 0.7, 0.6, 0.5, 0.5] + [1.0] * 6)
    exp, unexp, rule = contrast_groups(rows, lab, "benevolence", "intrinsic")
    assert rule == "score_split" and exp == [0, 1, 2] and unexp == [3, 4, 5]
    lab2 = _labels(rows, [1, 1, 0, 0, 0, 0] + [1.0] * 6)
    assert contrast_groups(rows, lab2, "benevolence", "prompted")[2] == "exp_vs_intrinsic_unexp"
    assert contrast_groups(rows, lab2, "benevolence", "intrinsic")[2] == "labels"
    lab3 = _labels(rows, [1.0] * 6 + [0.0] * 6)  # nothing unexp in intrinsic, nothing exp in prompted
    assert contrast_groups(rows, lab3, "benevolence", "prompted")[2] == "condition"
    assert contrast_groups(rows, lab3, "benevolence", "intrinsic")[2] == "empty"
    lab4 = _labels(rows, [1, 1, 0, 0, 0, 0] + [1, 1, 1, 0, 0, 0])
    assert contrast_groups(rows, lab4, "benevolence", "prompted")[2] == "labels"
    assert contrast_groups(rows, lab4, "benevolence", "prompted", contrast="vs_intrinsic")[2] == \
        "exp_vs_intrinsic_unexp"
    feats = torch.randn(12, 2, 4)
    vec = value_vectors(feats, rows, lab3, ["benevolence"], [0, 1])
    assert torch.isnan(vec.intrinsic).all() and vec.finite_values(0) == []
    with pytest.raises(MechvalueError, match="undefined"):
        vec.axes("benevolence", 0)
    with pytest.raises(MechvalueError, match="features must be"):
        value_vectors(feats[:, :1], rows, lab3, ["benevolence"], [0, 1])


def test_dual_vectors_save_load_and_bad_inputs(tmp_path):
    g = torch.Generator().manual_seed(0)
    vec = make_vectors(torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g),
                       values=["power", "security"], layers=[0, 2, 4], judge="word",
                       groups=[{"value": "power", "rule": "labels"}])
    path = vec.save(tmp_path / "v.safetensors")
    back = DualVectors.load(path)
    assert back.values == ["power", "security"] and back.layers == [0, 2, 4]
    assert torch.equal(back.intrinsic, vec.intrinsic)
    assert torch.allclose(back.pair.prompted_perp, vec.pair.prompted_perp)
    assert back.meta["judge"] == "word" and back.meta["processing"] == "none"
    with pytest.raises(MechvalueError, match="do not match"):
        DualVectors(["power"], [0], torch.zeros(1, 2, 8), torch.zeros(1, 2, 8))
    with pytest.raises(MechvalueError, match="no vectors"):
        vec.get("intrinsic", "power", 1)
    with pytest.raises(MechvalueError, match="vector type"):
        vec.stack("shared")
    torch.save({}, tmp_path / "bad.safetensors")
    with pytest.raises(CorruptFileError):
        DualVectors.load(tmp_path / "bad.safetensors")
    for bad in (dict(contrast="both"), dict(n_queries=1), dict(alphas=()), dict(steer_normalize="l2"),
                dict(max_mmlu_drop=5)):
        with pytest.raises(MechvalueError, match="DualConfig"):
            DualConfig(**bad)


# ------------------------------------------------------------------ structure


def test_structure_recovers_a_planted_circumplex_and_common_delta():
    d, n = 12, len(VALUES)
    angles = torch.tensor([math.radians(36 * k) for k in range(n)])
    g = torch.Generator().manual_seed(0)
    circle = 3 * (torch.cos(angles)[:, None] * basis(d, 0) + torch.sin(angles)[:, None] * basis(d, 1))
    intrinsic = circle + 0.05 * torch.randn(n, d, generator=g)
    prompted = circle + 2 * basis(d, 5) + 0.05 * torch.randn(n, d, generator=g)  # common delta along e5
    vec = make_vectors(intrinsic[:, None], prompted[:, None], values=list(VALUES))
    circ, mats, info = structure(vec, 0, n_permutations=200)
    assert info["r2"] > 0.98 and info["p_value"] < 0.02 and info["delta_share"] > 0.98
    assert list(circ.value) == list(VALUES)
    assert np.allclose(circ[["x", "y"]].to_numpy(), circ[["theory_x", "theory_y"]].to_numpy(), atol=0.05)
    m = mats["shared"].set_index("value")
    assert m.loc["universalism", "benevolence"] > m.loc["universalism", "power"]
    assert list(mats["shared"].columns) == ["value", *VALUES]
