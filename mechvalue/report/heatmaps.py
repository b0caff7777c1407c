"""Heatmaps of labelled matrices: leakage, NGLR, cosines (re-exported by :mod:`mechvalue.report.figures`).

Matrices come as DataFrames or arrays (see :func:`mechvalue.report.figure_base.as_matrix`); value labels are
put in circumplex order.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mechvalue.core.errors import MechvalueError
from mechvalue.core.values import VALUES
from mechvalue.report.figure_base import as_matrix, display_label, new_figure


def matrix_heatmap(matrix, *, title: str = "", cmap: str = "viridis", vmin: float | None = None,
                   vmax: float | None = None, center: float | None = None, annotate: bool = True,
                   xlabel: str = "", ylabel: str = "", cbar_label: str = "", diagonal: bool = False) -> Figure:
    """Heatmap of a labelled matrix (see :func:`as_matrix`); ``center`` gives a diverging norm around it.

    Undefined (NaN) cells are grey and, when annotated, marked "–".
    """
    mat = as_matrix(matrix, title or "matrix")
    arr = mat.to_numpy()
    finite = arr[np.isfinite(arr)]
    lo = float(vmin if vmin is not None else (finite.min() if finite.size else 0.0))
    hi = float(vmax if vmax is not None else (finite.max() if finite.size else 1.0))
    norm = None
    if center is not None:
        span = max(abs(lo - center), abs(hi - center), 1e-12)
        norm = TwoSlopeNorm(vcenter=center, vmin=center - span, vmax=center + span)
    size = 0.5 + 0.45 * max(mat.shape)
    fig, ax = new_figure(size + 1.5, 0.5 + 0.45 * mat.shape[0] + 0.8)
    cm = matplotlib.colormaps[cmap].with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(arr), cmap=cm, norm=norm, vmin=None if norm else lo,
                   vmax=None if norm else hi, aspect="auto")
    ax.set_xticks(range(mat.shape[1]), [display_label(c) for c in mat.columns], rotation=45, ha="right")
    ax.set_yticks(range(mat.shape[0]), [display_label(r) for r in mat.index])
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if annotate and arr.size <= 400:
        for (i, j), x in np.ndenumerate(arr):  # undefined (NaN) cells: grey, marked "–"
            ax.text(j, i, f"{x:.2f}" if np.isfinite(x) else "–", ha="center", va="center", fontsize=6.5)
    if diagonal:
        for i, r in enumerate(mat.index):
            if r in list(mat.columns):
                j = list(mat.columns).index(r)
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.5, ec="black"))
    fig.colorbar(im, ax=ax, label=cbar_label, shrink=0.8)
    return fig


def leakage_heatmap(matrix, *, title: str = "Leakage: score change of each value when steering a target",
                    annotate: bool = True) -> Figure:
    """Target x value matrix of score changes (rows: targets, columns: the ten values), diverging at 0."""
    mat = as_matrix(matrix, "leakage matrix")
    if set(mat.columns) != set(VALUES) or not set(mat.index) <= set(VALUES):
        raise MechvalueError(f"leakage matrix: columns must be the ten values and rows targets among them, got "
                             f"rows {list(mat.index)} and columns {list(mat.columns)}")
    return matrix_heatmap(mat, title=title, cmap="RdBu_r", center=0.0, annotate=annotate, xlabel="value",
                          ylabel="steered target", cbar_label="score change", diagonal=True)


def nglr_heatmap(matrix, *, kind: str = "target_group", title: str | None = None) -> Figure:
    """NGLR heatmap: ``kind="target_group"`` (rows targets, diverging around 1 = uniform) or ``"group_group"``."""
    if kind == "target_group":
        return matrix_heatmap(matrix, title=title or "NGLR target -> group (1 = uniform)", cmap="PuOr_r",
                              center=1.0, xlabel="group", ylabel="target", cbar_label="NGLR")
    if kind == "group_group":
        return matrix_heatmap(matrix, title=title or "NGLR group -> group", cmap="viridis",
                              xlabel="leaks into group", ylabel="steered group", cbar_label="NGLR")
    raise MechvalueError(f"nglr_heatmap: kind={kind!r}; use 'target_group' or 'group_group'")


def cosine_heatmap(matrix, *, title: str = "Cosine similarity of value vectors") -> Figure:
    """Square cosine matrix on a fixed [-1, 1] diverging scale."""
    mat = as_matrix(matrix, "cosine matrix")
    if mat.shape[0] != mat.shape[1] or list(mat.index) != list(mat.columns):
        raise MechvalueError(f"cosine matrix: must be square with the same row and column labels, got "
                             f"{list(mat.index)} x {list(mat.columns)}")
    return matrix_heatmap(mat, title=title, cmap="RdBu_r", vmin=-1.0, vmax=1.0, center=0.0, cbar_label="cosine")
