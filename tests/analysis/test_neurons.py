"""Planted-signal tests for neuron selection, sets and W_out angle classes."""

from __future__ import annotations

import math

import pytest
import torch

from mechvalue.analysis.neurons import (
    NeuronSet,
    activation_prob_delta,
    angle_classes,
    jaccard_matrix,
    matched_random,
    threshold_sets,
    top_k,
)
from mechvalue.analysis.vectors import svd_axes
from mechvalue.core.errors import CorruptFileError, MechvalueError


def test_threshold_sets_planted(unchecked_shapes):
    p_a, p_b = torch.full((3, 10), 0.5), torch.full((3, 10), 0.5)
    p_a[1, 2] = 0.6  # +0.1
    p_b[2, 7] = 0.58  # -0.08
    p_a[0, 0] = 0.52  # +0.02 below tau
    delta = activation_prob_delta(p_a, p_b)
    a, b = threshold_sets(delta, 0.03, layers=[4, 5, 6], names=("A", "B"))
    assert a.keys() == {(5, 2)} and b.keys() == {(6, 7)}
    assert a.signs.tolist() == [1] and b.signs.tolist() == [-1]
    assert a.fraction(3, 10) == pytest.approx(1 / 30)
    with pytest.raises(MechvalueError):
        threshold_sets(delta, 1.5, [0, 1, 2])
    with pytest.raises(MechvalueError):
        activation_prob_delta(p_a, p_b[:2])


def test_top_k_and_matched_random(tmp_path):
    score = torch.zeros(4, 20)
    score[1, 3], score[1, 4], score[3, 9] = 5.0, 4.0, 3.0
    s = top_k(score, 3, layers=range(4), name="top")
    assert s.keys() == {(1, 3), (1, 4), (3, 9)}
    r = matched_random(s, 20, seed=0, exclude=s)
    assert r.counts_per_layer(4).tolist() == s.counts_per_layer(4).tolist()
    assert not (r.keys() & s.keys())
    assert matched_random(s, 20, seed=0).keys() == matched_random(s, 20, seed=0).keys()
    assert jaccard_matrix([s, s])[0, 1] == 1.0
    path = s.save(tmp_path / "s.safetensors")
    t = NeuronSet.load(path)
    assert t.keys() == s.keys() and t.name == "top"
    path.write_bytes(b"not a file")
    with pytest.raises(CorruptFileError):
        NeuronSet.load(path)


def test_angle_classes_planted_rows():
    g = torch.Generator().manual_seed(0)
    d = 16
    q, _ = torch.linalg.qr(torch.randn(d, 3, generator=g))
    s_dir, ui, up = q[:, 0], q[:, 1], q[:, 2]
    axes = svd_axes(s_dir + 0.5 * ui, s_dir + 0.5 * up)
    u_s, u_i = axes.shared, axes.intrinsic
    rows = torch.randn(100, d, generator=g) * 0.01  # small noise rows, dropped by top-k
    def at(deg, norm=5.0):
        r = math.radians(deg)
        return norm * (math.cos(r) * u_s + math.sin(r) * u_i)
    rows[0], rows[1], rows[2] = at(10), at(85), at(-80)  # shared, intrinsic, prompted
    rows[3] = at(45)  # 45 degrees from shared and intrinsic: unassigned
    rows[4] = at(180)  # anti-shared: unassigned when signed, shared when unsigned
    cls = angle_classes(rows, axes, top_frac=0.05, max_angle=30)
    assert cls.members("shared").tolist() == [0]
    assert cls.members("intrinsic").tolist() == [1]
    assert cls.members("prompted").tolist() == [2]
    assert cls.label[3] == -1 and cls.label[4] == -1 and cls.kept[:5].all() and not cls.kept[5:].any()
    unsigned = angle_classes(rows, axes, top_frac=0.05, signed=False)
    assert 4 in unsigned.members("shared").tolist()
    assert cls.counts() == {"shared": 1, "intrinsic": 1, "prompted": 1}
    with pytest.raises(MechvalueError):
        angle_classes(rows[:, :5], axes)


def test_angle_class_table_rows():
    from mechvalue.analysis.neurons import angle_class_table

    axes = svd_axes(torch.tensor([1.0, 1.0, 0.0]), torch.tensor([1.0, -1.0, 0.0]))  # shared e0, intrinsic e1
    rows = torch.tensor([[2.0, 0.2, 0.0], [0.0, -3.0, 0.0], [1.0, 1.0, 0.0], [0.01, 0.0, 0.01]])
    df = angle_class_table(angle_classes(rows, axes, top_frac=0.75), value="power", layer=4)
    assert list(df.columns) == ["value", "layer", "neuron", "class", "angle", "proj_norm", "x", "y"]
    assert df.neuron.tolist() == [0, 1, 2] and df["class"].tolist() == ["shared", "prompted", "unassigned"]
    assert df.angle.tolist() == pytest.approx([math.degrees(math.atan(0.1)), 0.0, 45.0], abs=1e-3)
    assert df.x.tolist() == pytest.approx([2.0, 0.0, 1.0]) and df.y.tolist() == pytest.approx([0.2, -3.0, 1.0])
    assert (df.value == "power").all() and (df.layer == 4).all()
