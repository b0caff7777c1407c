"""Heatmaps from small synthetic matrices: circumplex order, norms, and clear errors for bad shapes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from mechvalue.core.errors import MechvalueError
from mechvalue.core.values import CODES, GROUP_SETS, VALUES
from mechvalue.report import heatmaps as viz_heatmaps

RNG = np.random.default_rng(0)


def _tick_labels(ax, axis="x"):
    return [t.get_text() for t in (ax.get_xticklabels() if axis == "x" else ax.get_yticklabels())]


def _matrix(rows, cols, lo=-1.0, hi=1.0, first="target"):
    df = pd.DataFrame(RNG.uniform(lo, hi, (len(rows), len(cols))), columns=list(cols))
    df.insert(0, first, list(rows))
    return df


def test_leakage_heatmap_orders_circumplex_and_centres_zero():
    shuffled = list(reversed(VALUES))
    df = _matrix(shuffled, shuffled, lo=-0.2, hi=0.6)
    fig = viz_heatmaps.leakage_heatmap(df)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert _tick_labels(ax, "x") == [CODES[v] for v in VALUES]
    assert _tick_labels(ax, "y") == [CODES[v] for v in VALUES]
    im = ax.images[0]
    assert im.norm.vcenter == 0.0 and im.norm.vmin == -im.norm.vmax
    assert len(ax.patches) == 10  # diagonal boxes
    assert len(fig.axes) == 2  # colorbar


def test_leakage_heatmap_accepts_array_and_tensor():
    arr = RNG.normal(size=(10, 10))
    assert isinstance(viz_heatmaps.leakage_heatmap(arr), Figure)
    assert isinstance(viz_heatmaps.leakage_heatmap(torch.tensor(arr)), Figure)


def test_leakage_heatmap_bad_shapes():
    with pytest.raises(MechvalueError, match="2-D"):
        viz_heatmaps.leakage_heatmap(np.zeros(10))
    with pytest.raises(MechvalueError, match="labels"):
        viz_heatmaps.leakage_heatmap(np.zeros((3, 4)))
    with pytest.raises(MechvalueError, match="ten values"):
        viz_heatmaps.leakage_heatmap(_matrix(VALUES, VALUES[:7]))
    with pytest.raises(MechvalueError, match="non-numeric"):
        viz_heatmaps.leakage_heatmap(pd.DataFrame({"target": ["power"], **{v: ["x"] for v in VALUES}}))


def test_nglr_heatmaps():
    groups = list(GROUP_SETS["HO4"])
    tg = viz_heatmaps.nglr_heatmap(_matrix(VALUES, groups, 0, 2), kind="target_group")
    assert _tick_labels(tg.axes[0], "x") == groups
    assert tg.axes[0].images[0].norm.vcenter == 1.0
    gg = viz_heatmaps.nglr_heatmap(_matrix(groups, groups, 0, 2, first="group"), kind="group_group")
    assert _tick_labels(gg.axes[0], "y") == groups
    with pytest.raises(MechvalueError, match="kind"):
        viz_heatmaps.nglr_heatmap(_matrix(groups, groups), kind="diagonal")


def test_cosine_heatmap_fixed_scale_and_square_check():
    m = RNG.uniform(-1, 1, (10, 10))
    fig = viz_heatmaps.cosine_heatmap(pd.DataFrame(m, index=VALUES, columns=VALUES))
    norm = fig.axes[0].images[0].norm
    assert (norm.vmin, norm.vmax) == (-1.0, 1.0)
    with pytest.raises(MechvalueError, match="square"):
        viz_heatmaps.cosine_heatmap(pd.DataFrame(m[:, :4], index=VALUES, columns=VALUES[:4]))
