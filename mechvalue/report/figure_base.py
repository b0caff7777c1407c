"""Figure plumbing shared by the :mod:`mechvalue.report.figures` modules: Agg figures, PNG output, labelled matrices.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas (no pyplot, no display,
no global state). Everything public here is re-exported by :mod:`mechvalue.report.figures`.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mechvalue.core.artifacts import atomic_path
from mechvalue.core.errors import MechvalueError
from mechvalue.core.values import CODES, VALUES, canonical

#: short CI column names of some metrics in ``steering/summary.csv``; ``<metric>_ci_low``/``_ci_high`` always work
CI_COLUMNS = {"control_success": ("cs_ci_low", "cs_ci_high"), "perplexity": ("ppl_ci_low", "ppl_ci_high")}
#: metrics shown by default, in this order, when a summary has them
SUMMARY_METRICS = ("control_success", "judged", "judged_gain", "dilemma_gain", "dilemma_win", "nlr", "perplexity",
                   "mmlu", "distinct_2")


def new_figure(width: float = 6.0, height: float = 4.0, nrows: int = 1, ncols: int = 1, *, grid: bool = False,
               **subplot_kw):
    """A Figure with an Agg canvas and its axes: one Axes, or (``grid=True``) an ``nrows x ncols`` array."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, subplot_kw=subplot_kw or None)
    return fig, (axes if grid else axes[0, 0])


def _room(text, renderer, width: float) -> tuple[float, float]:
    """(the text's width, the width the figure leaves it around its anchor), in pixels."""
    box = text.get_window_extent(renderer)
    if text.get_horizontalalignment() == "center":
        centre = 0.5 * (box.x0 + box.x1)
        return box.width, 2 * max(0.0, min(centre, width - centre))
    return box.width, width - max(0.0, box.x0)


def _titles(fig: Figure) -> list:
    return [t for t in [ax.title for ax in fig.axes] + list(fig.texts)
            if t.get_text() and t.get_rotation() in (0, 0.0)]


def fit_titles(fig: Figure, passes: int = 3) -> Figure:
    """Wrap every axes title and figure-level text (suptitle, supxlabel, ...) that would be clipped.

    Each overflowing text is re-wrapped to the width left to it; the constrained layout then makes room
    for the extra lines. Titles that fit are left as they are; when every title clearly fits before the
    layout runs, nothing is drawn (the check is cheap).
    """
    renderer = fig.canvas.get_renderer()
    if all(w < 0.8 * room for w, room in (_room(t, renderer, fig.bbox.width) for t in _titles(fig))):
        return fig
    for _ in range(passes):
        fig.draw_without_rendering()
        width, changed = fig.bbox.width, False
        for text in _titles(fig):
            box = text.get_window_extent(renderer)
            if box.width <= 0 or (box.x0 >= -1 and box.x1 <= width + 1):
                continue
            _, room = _room(text, renderer, width)
            content = text.get_text()
            longest = max(len(line) for line in content.splitlines())
            chars = max(8, int(longest * max(room, 0.2 * width) * 0.95 / box.width))
            text.set_text("\n".join(textwrap.fill(line, chars) for line in content.splitlines()))
            changed = True
        if not changed:
            break
    return fig


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """PNG bytes of ``fig``, titles wrapped where they would be clipped (:func:`fit_titles`)."""
    fit_titles(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically; returns the path."""
    path = Path(path)
    data = figure_png(fig, dpi)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise MechvalueError(f"{what}: expected a DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MechvalueError(f"{what}: missing column(s) {missing} (columns: {list(df.columns)})")
    if df.empty:
        raise MechvalueError(f"{what}: no rows")
    return df


def ci_columns(df: pd.DataFrame, metric: str) -> tuple[str | None, str | None]:
    """The (low, high) CI columns of ``metric`` in ``df`` (``<metric>_ci_low`` or a :data:`CI_COLUMNS` alias)."""
    for lo, hi in ((f"{metric}_ci_low", f"{metric}_ci_high"), CI_COLUMNS.get(metric, ("", ""))):
        if lo in df and hi in df:
            return lo, hi
    return None, None


def summary_metrics(df: pd.DataFrame) -> list[str]:
    """Metric columns of a wide summary: :data:`SUMMARY_METRICS` first, then any column with CI columns."""
    extra = [c for c in df.columns if c not in SUMMARY_METRICS and ci_columns(df, c)[0] is not None]
    return [m for m in (*SUMMARY_METRICS, *extra) if m in df.columns]


def canonical_or_none(labels: Sequence) -> list[str] | None:
    """Canonical value names for ``labels``, or None when any label is not a value."""
    try:
        return [canonical(str(x)) for x in labels]
    except MechvalueError:
        return None


def display_label(name: str) -> str:
    return CODES.get(name, str(name))


def as_matrix(data, what: str = "matrix", rows: Sequence[str] | None = None,
              columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A labelled numeric matrix from a DataFrame (index or a first text column as row labels) or an array.

    Value names among the labels are canonicalised and put in circumplex order.
    """
    if isinstance(data, pd.DataFrame):
        df = data.copy()
        if len(df.columns) and not pd.api.types.is_numeric_dtype(df[df.columns[0]]):
            df = df.set_index(df.columns[0])
    else:
        arr = np.asarray(data.detach().cpu() if hasattr(data, "detach") else data, dtype=float)
        if arr.ndim != 2:
            raise MechvalueError(f"{what}: expected a 2-D matrix, got shape {arr.shape}")
        rows = list(rows) if rows is not None else (list(VALUES) if arr.shape[0] == len(VALUES) else None)
        columns = list(columns) if columns is not None else (list(VALUES) if arr.shape[1] == len(VALUES) else None)
        if rows is None or columns is None or (len(rows), len(columns)) != arr.shape:
            raise MechvalueError(f"{what}: shape {arr.shape} needs row and column labels of matching length")
        df = pd.DataFrame(arr, index=rows, columns=columns)
    try:
        df = df.astype(float)
    except (TypeError, ValueError) as exc:
        raise MechvalueError(f"{what}: non-numeric entries ({exc})") from exc
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise MechvalueError(f"{what}: empty matrix")
    for axis in ("index", "columns"):
        labels = getattr(df, axis)
        canon = canonical_or_none(labels)
        if canon is not None:
            df = df.set_axis(canon, axis=axis)
            df = df.reindex(**{axis: [v for v in VALUES if v in canon]})
    return df
