"""Planted-signal tests for the pure vector math."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechvalue.analysis.vectors import (
    circumplex_fit,
    cosine,
    diff_in_means,
    mean_delta,
    orthogonalize,
    push_amount,
    random_directions,
    svd_axes,
    train_probe,
    train_test_split,
)
from mechvalue.core.errors import MechvalueError
from mechvalue.core.values import circle_coordinates


def test_probe_recovers_planted_direction_and_push_lands_at_p0():
    g = torch.Generator().manual_seed(0)
    d, n = 32, 400
    u = torch.randn(d, generator=g)
    u /= u.norm()
    y = torch.arange(n) % 2
    x = torch.randn(n, d, generator=g) + (2 * y[:, None] - 1) * 1.5 * u + 3.0  # offset: raw-space bias matters
    tr, te = train_test_split(n, 0.3, seed=0)
    probe = train_probe(x[tr], y[tr], x_test=x[te], y_test=y[te])
    assert probe.accuracy > 0.9
    assert cosine(probe.direction, u) > 0.9
    neg = x[y == 0]
    neg = neg[probe.prob(neg) < 0.9]
    eps = push_amount(probe, neg, 0.9)
    moved = neg + eps[:, None] * probe.direction
    assert torch.allclose(probe.prob(moved), torch.full((len(neg),), 0.9), atol=1e-3)
    # already above P0: no push
    pos_high = x[y == 1][probe.prob(x[y == 1]) > 0.95]
    assert (push_amount(probe, pos_high, 0.9) == 0).all()
    with pytest.raises(MechvalueError):
        push_amount(probe, neg, 1.5)


def test_probe_errors():
    with pytest.raises(MechvalueError, match="both classes"):
        train_probe(torch.randn(4, 3), [1, 1, 1, 1])
    with pytest.raises(MechvalueError, match="labels"):
        train_probe(torch.randn(4, 3), [0, 1])


def test_diff_in_means_and_orthogonalize(unchecked_shapes):
    pos = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    neg = torch.tensor([[0.0, 0.0]])
    assert torch.equal(diff_in_means(pos, neg), torch.tensor([2.0, 3.0]))
    a, b = torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])
    assert torch.allclose(orthogonalize(a, b), torch.tensor([0.0, 1.0]))
    with pytest.raises(MechvalueError):
        diff_in_means(pos, torch.zeros(1, 3))


def test_svd_axes_planted_shared_component_and_signs():
    g = torch.Generator().manual_seed(1)
    d = 64
    q, _ = torch.linalg.qr(torch.randn(d, 3, generator=g))
    s, u = q[:, 0], q[:, 1]
    v_int, v_prompt = 2.0 * s + 0.8 * u, 2.0 * s - 0.8 * u  # shared part s, unique part +-u
    axes = svd_axes(v_int, v_prompt)
    assert cosine(axes.shared, s) > 0.999
    # the unique axis points from the prompted toward the intrinsic vector: +u
    assert cosine(axes.intrinsic, u) > 0.999
    assert cosine(svd_axes(v_int, v_prompt, normalize=False).shared, s) > 0.999
    assert torch.allclose(axes.prompted, -axes.intrinsic)
    # sign convention survives flipping inputs' global sign of the SVD
    axes2 = svd_axes(v_int, v_prompt)
    assert axes2.shared @ (v_int + v_prompt) > 0
    # normalised variant: u_shared ∝ v̂_int + v̂_prompt exactly
    hat = v_int / v_int.norm() + v_prompt / v_prompt.norm()
    assert cosine(axes.shared, hat) > 0.99999
    assert torch.allclose(axes.basis.T @ axes.basis, torch.eye(2), atol=1e-5)


def test_svd_axes_unnormalised_leans_to_larger_vector():
    a, b = torch.tensor([10.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    assert cosine(svd_axes(a, b, normalize=False).shared, a) > 0.99
    assert cosine(svd_axes(a, b).shared, a / 10 + b) > 0.9999


def test_mean_delta_explained_share():
    base = torch.tensor([1.0, 0.0, 0.0])
    deltas = torch.stack([base * k for k in (1.0, 2.0, 3.0)])
    m, share = mean_delta(deltas)
    assert share == pytest.approx(1.0) and torch.allclose(m, base * 2)
    orth = torch.eye(3)
    assert mean_delta(orth)[1] == pytest.approx(1 / 3, abs=1e-6)


def test_circumplex_fit_recovers_planted_circle_and_null():
    target = np.array(circle_coordinates())
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(2, 50))
    axes = torch.tensor(target @ basis + 0.05 * rng.normal(size=(10, 50)), dtype=torch.float32)
    fit = circumplex_fit(axes, target, n_permutations=200)
    assert fit["r2"] > 0.95 and fit["p_value"] < 0.02
    noise = torch.tensor(rng.normal(size=(10, 50)), dtype=torch.float32)
    assert circumplex_fit(noise, target, n_permutations=200)["p_value"] > 0.02


def test_random_directions_match_norm():
    v = torch.tensor([3.0, 4.0])
    r = random_directions(v, 5, seed=0)
    assert r.shape == (5, 2) and torch.allclose(r.norm(dim=1), torch.full((5,), 5.0))
    assert not torch.equal(r, random_directions(v, 5, seed=1))


def test_pair_decomposition_batched_planted(unchecked_shapes):
    from mechvalue.analysis.vectors import pair_decomposition

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, 16, generator=g), torch.randn(3, 4, 16, generator=g)
    p = pair_decomposition(a, b)
    assert p.intrinsic_perp.shape == (3, 4, 16) and p.cos.shape == (3, 4)
    assert torch.allclose(p.intrinsic_perp[1, 2], orthogonalize(a[1, 2], b[1, 2]), atol=1e-6)
    assert torch.allclose((p.prompted_perp * a).sum(-1), torch.zeros(3, 4), atol=1e-5)
    assert torch.allclose(p.cos, cosine(a, b), atol=1e-6)
    assert torch.allclose(p.retained_prompted, (1 - p.cos ** 2).sqrt(), atol=1e-5)
    z = pair_decomposition(torch.zeros(8), torch.ones(8))  # an empty vector: NaN shares, nothing removed
    assert torch.isnan(z.cos) and torch.isnan(z.retained_intrinsic) and torch.equal(z.prompted_perp, torch.ones(8))
    with pytest.raises(MechvalueError, match="one shape"):
        pair_decomposition(torch.zeros(8), torch.zeros(7))


def test_cosine_matrix_and_procrustes_align_match_circumplex_fit(unchecked_shapes):
    from mechvalue.analysis.vectors import cosine_matrix, procrustes_align

    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    m = cosine_matrix(x)
    assert torch.allclose(m, torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 1.0]]))
    target = np.array(circle_coordinates())
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    g = np.random.default_rng(0)
    points = 5 * target @ rot.T * np.array([1, -1]) + 3 + 0.1 * g.standard_normal(target.shape)  # reflected too
    aligned = procrustes_align(points, target)
    assert np.abs(aligned - target).max() < 0.1
    r2 = 1 - ((aligned - target) ** 2).sum() / ((target - target.mean(0)) ** 2).sum()
    axes = torch.tensor(np.c_[points, np.zeros((10, 3))], dtype=torch.float32)
    assert r2 == pytest.approx(circumplex_fit(axes, target, n_permutations=10)["r2"], abs=1e-3)
    with pytest.raises(MechvalueError, match="procrustes_align"):
        procrustes_align(points[:, :1], target)


def test_shape_annotations_are_checked_at_run_time():
    """conftest installs jaxtyping's import hook: a wrongly shaped argument fails at the boundary."""
    import jaxtyping

    from mechvalue.analysis.vectors import cosine, diff_in_means

    with pytest.raises(jaxtyping.TypeCheckError):
        diff_in_means(torch.zeros(3), torch.zeros(3))  # [d] where [n, d] is annotated
    with pytest.raises(jaxtyping.TypeCheckError):
        cosine(torch.zeros(2, 4), torch.zeros(2, 5))  # the ``d`` of both arguments must agree
