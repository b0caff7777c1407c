"""Planted-signal tests for the pure vector math."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechvalue.errors import MechvalueError
from mechvalue.values import circle_coordinates
from mechvalue.vectors import (
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


def test_diff_in_means_and_orthogonalize():
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
