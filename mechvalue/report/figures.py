"""Figures from plain data (DataFrames, arrays, tensors); every function returns a matplotlib Figure.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas (no pyplot, no display,
no global state); :func:`save_figure` writes a PNG atomically. Value axes follow the circumplex
order :data:`mechvalue.core.values.VALUES` whenever the labels are the ten values. Bad inputs (missing
columns, wrong shapes, unknown value names) raise :class:`~mechvalue.core.errors.MechvalueError`.

This module holds the charts and re-exports the rest, so every name is importable from here:
figure plumbing and :func:`as_matrix` (:mod:`mechvalue.report.figure_base`), heatmaps
(:mod:`mechvalue.report.heatmaps`) and the token views :func:`neuron_activation_view` (circuitsvis,
for notebooks) and :func:`tokens_html` (self-contained colored spans, no JavaScript, used by the
report) (:mod:`mechvalue.report.tokens`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from mechvalue.core.errors import MechvalueError
from mechvalue.core.values import VALUES, canonical, circle_coordinates
from mechvalue.report.figure_base import (
    CI_COLUMNS,
    SUMMARY_METRICS,
    as_matrix,
    canonical_or_none,
    ci_columns,
    display_label,
    figure_png,
    fit_titles,
    new_figure,
    require_columns,
    save_figure,
    summary_metrics,
)
from mechvalue.report.heatmaps import cosine_heatmap, leakage_heatmap, matrix_heatmap, nglr_heatmap
from mechvalue.report.tokens import neuron_activation_view, tokens_html

__all__ = [
    "CI_COLUMNS", "CLASS_COLORS", "SUMMARY_METRICS", "as_matrix", "ci_columns", "circumplex_scatter",
    "class_count_bars", "cosine_heatmap", "effect_vs_factor", "figure_png", "fit_titles", "layer_histogram",
    "leakage_heatmap",
    "line_plot", "matrix_heatmap", "method_comparison_bars", "neuron_activation_view", "neuron_class_scatter",
    "new_figure", "nglr_heatmap", "probe_accuracy_curves", "radar_chart", "save_figure", "summary_metrics",
    "tokens_html", "value_score_bars", "value_score_chart",
]

CLASS_COLORS = {"shared": "#7b3294", "intrinsic": "#1a9641", "prompted": "#e66101", "unassigned": "#bbbbbb"}


# ------------------------------------------------------------------ charts

def radar_chart(scores, *, title: str = "Value scores", methods: Sequence[str] | None = None) -> Figure:
    """Radar of the ten value scores, one polygon per method.

    ``scores``: a DataFrame with columns method, value, score (duplicates averaged; the axes are the
    values present, at least 3, in circumplex order) or a mapping method -> ten scores in
    :data:`VALUES` order. Uses pyvalues' radar projection (polygon grid).
    """
    if isinstance(scores, Mapping):
        rows = []
        for m, s in scores.items():
            s = np.asarray(s, float).reshape(-1)
            if s.size != len(VALUES):
                raise MechvalueError(f"radar: {m!r} has {s.size} scores, expected {len(VALUES)} (VALUES order)")
            rows += [{"method": m, "value": v, "score": x} for v, x in zip(VALUES, s)]
        scores = pd.DataFrame(rows)
    df = require_columns(scores, ["method", "value", "score"], "radar scores").copy()
    df["value"] = [canonical(str(v)) for v in df["value"]]
    wide = df.pivot_table(index="method", columns="value", values="score", aggfunc="mean", sort=False)
    axes_values = [v for v in VALUES if v in wide.columns]
    if len(axes_values) < 3:
        raise MechvalueError(f"radar: needs scores for at least 3 values, got {axes_values}")
    missing = {m: [v for v in axes_values if pd.isna(wide.loc[m, v])] for m in wide.index}
    missing = {m: v for m, v in missing.items() if v}
    if missing:
        raise MechvalueError(f"radar: scores missing for {missing}")
    order = [m for m in (methods or wide.index) if m in wide.index]
    try:
        from pyvalues.radarplot import radar_factory

        theta, projection = radar_factory(len(axes_values)), "radar"
    except ImportError:  # pragma: no cover - pyvalues is a dependency
        theta, projection = np.linspace(0, 2 * np.pi, len(axes_values), endpoint=False), "polar"
    fig, ax = new_figure(6.5, 5.5, projection=projection)
    arr = wide.loc[order, axes_values].to_numpy(float)
    lo, hi = float(arr.min()), float(arr.max())
    pad = 0.1 * (hi - lo) if hi > lo else 0.5
    ax.set_ylim(lo - pad, hi + pad)  # centre = lowest score minus a margin: narrow-band scores stay visible
    colors = [f"C{i}" for i in range(len(order))]
    for m, row, c in zip(order, arr, colors):
        t, r = np.append(theta, theta[0]), np.append(row, row[0])
        ax.plot(t, r, color=c, label=str(m), lw=1.8)
        ax.fill(t, r, color=c, alpha=0.08)
    ax.set_thetagrids(np.degrees(theta), [display_label(v) for v in axes_values])
    ax.set_title(title)
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


def value_score_bars(scores: pd.DataFrame, *, title: str = "Value scores",
                     methods: Sequence[str] | None = None) -> Figure:
    """Grouped bars of value scores (columns method, value, score; duplicates averaged): one group per value,
    one bar per method. Works for any number of values; :func:`value_score_chart` uses it below 3 values."""
    df = require_columns(scores, ["method", "value", "score"], "value scores").copy()
    df["value"] = [canonical(str(v)) for v in df["value"]]
    wide = df.pivot_table(index="value", columns="method", values="score", aggfunc="mean", sort=False)
    wide = wide.reindex([v for v in VALUES if v in wide.index])
    order = [m for m in (methods or wide.columns) if m in wide.columns]
    fig, ax = new_figure(max(4.5, 1.0 + 0.35 * len(order) * len(wide)), 3.8)
    width = 0.8 / max(1, len(order))
    for i, m in enumerate(order):
        x = np.arange(len(wide)) + (i - (len(order) - 1) / 2) * width
        ax.bar(x, np.nan_to_num(wide[m].to_numpy(float)), width=width, label=str(m), color=f"C{i % 10}")
    ax.set_xticks(range(len(wide)), [display_label(v) for v in wide.index])
    ax.set(title=title, ylabel="score")
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


def value_score_chart(scores: pd.DataFrame, *, title: str = "Value scores",
                      methods: Sequence[str] | None = None) -> Figure:
    """:func:`radar_chart` when the scores cover at least 3 values (every method scored on each), else
    :func:`value_score_bars`: a chart for any number of values from 1 to 10."""
    df = require_columns(scores, ["method", "value", "score"], "value scores")
    complete = df.dropna(subset=["score"]).groupby("method")["value"].nunique()
    n_values = df["value"].map(lambda v: canonical(str(v))).nunique()
    if n_values >= 3 and (complete == n_values).all():
        return radar_chart(df, title=title, methods=methods)
    return value_score_bars(df, title=title, methods=methods)


def method_comparison_bars(summary: pd.DataFrame, *, metrics: Sequence[str] | None = None,
                           group: str = "method", title: str = "Method comparison (95% CI)") -> Figure:
    """One bar panel per metric (rows of ``summary`` = methods), with CI error bars.

    CI columns: see :func:`ci_columns`; default metrics: :func:`summary_metrics`. Metrics absent or
    all-NaN are skipped.
    """
    df = require_columns(summary, [group], "comparison summary")
    metrics = [m for m in (metrics or summary_metrics(df)) if m in df.columns]
    metrics = [m for m in metrics if pd.to_numeric(df[m], errors="coerce").notna().any()]
    if not metrics:
        raise MechvalueError(f"comparison summary: no metric with numbers among columns {list(df.columns)}")
    ncols = min(4, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = new_figure(3.0 * ncols + 0.5, 3.3 * nrows + 0.3, nrows, ncols, grid=True)
    for ax in np.ravel(axes)[len(metrics):]:
        ax.set_axis_off()
    labels = [str(x) for x in df[group]]
    for ax, m in zip(np.ravel(axes), metrics):
        est = pd.to_numeric(df[m], errors="coerce").to_numpy(float)
        lo_c, hi_c = ci_columns(df, m)
        lo = pd.to_numeric(df[lo_c], errors="coerce").to_numpy(float) if lo_c else np.full_like(est, np.nan)
        hi = pd.to_numeric(df[hi_c], errors="coerce").to_numpy(float) if hi_c else np.full_like(est, np.nan)
        err = np.nan_to_num(np.clip(np.vstack([est - lo, hi - est]), 0, None))
        ax.bar(range(len(est)), np.nan_to_num(est), yerr=err, capsize=3,
               color=[f"C{i % 10}" for i in range(len(est))])
        ax.set_xticks(range(len(est)), labels, rotation=45, ha="right", fontsize="small")
        ax.set_title(m)
    fig.suptitle(title)
    return fig


def line_plot(df: pd.DataFrame, x: str, y: str, *, hue: str | None = None, title: str = "", xlabel: str = "",
              ylabel: str = "", hlines: Sequence[float] = (), vlines: Sequence[float] = (),
              logy: bool = False) -> Figure:
    """``y`` against ``x``, one line per ``hue`` level (value names in circumplex order), with guide lines."""
    require_columns(df, [x, y] + ([hue] if hue else []), f"line plot of {y}")
    fig, ax = new_figure(6.5, 3.8)
    groups = [(None, df)] if hue is None else list(df.groupby(hue, sort=False))
    if hue is not None and canonical_or_none([g for g, _ in groups]) is not None:
        groups.sort(key=lambda g: VALUES.index(canonical(str(g[0]))))
    for i, (name, sub) in enumerate(groups):
        sub = sub.sort_values(x)
        label = None if name is None else display_label(str(name))
        ax.plot(sub[x], sub[y], marker=".", color=f"C{i % 10}", label=label)
    for h in hlines:
        ax.axhline(h, ls="--", color="grey", lw=1)
    for v in vlines:
        ax.axvline(v, ls=":", color="grey", lw=1)
    if logy:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel or x, ylabel=ylabel or y)
    if hue is not None:
        ax.legend(fontsize="x-small", ncols=2)
    return fig


def layer_histogram(counts: pd.DataFrame, *, title: str = "Value neurons per layer") -> Figure:
    """Stacked bars of neuron counts per layer, one colour per set; relative depth on the top axis.

    ``counts``: columns set, layer, count (and optionally relative_depth = layer / (n_layers - 1)).
    """
    df = require_columns(counts, ["set", "layer", "count"], "layer counts")
    wide = df.pivot_table(index="layer", columns="set", values="count", aggfunc="sum", fill_value=0, sort=False)
    wide = wide.sort_index()
    if canonical_or_none(wide.columns) is not None:  # value sets in circumplex order
        wide = wide[sorted(wide.columns, key=lambda c: VALUES.index(canonical(str(c))))]
    fig, ax = new_figure(7.0, 3.8)
    bottom = np.zeros(len(wide))
    for i, s in enumerate(wide.columns):
        ax.bar(wide.index, wide[s].to_numpy(float), bottom=bottom, label=str(s), color=f"C{i % 10}")
        bottom += wide[s].to_numpy(float)
    ax.set(title=title, xlabel="layer", ylabel="neurons")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if "relative_depth" in df and (df["layer"] > 0).any():
        nz = df[df["layer"] > 0]
        ratio = float((nz["relative_depth"] / nz["layer"]).median())
        if math.isfinite(ratio) and ratio > 0:
            top = ax.secondary_xaxis("top", functions=(lambda v: v * ratio, lambda v: v / ratio))
            top.set_xlabel("relative depth")
    return fig


def probe_accuracy_curves(df: pd.DataFrame, *, threshold: float = 0.9,
                          title: str = "Probe accuracy per layer") -> Figure:
    """Per-value probe accuracy against layer; selected layers marked, the ``threshold`` dashed."""
    require_columns(df, ["value", "layer", "accuracy"], "probe accuracy")
    fig = line_plot(df, "layer", "accuracy", hue="value", title=title, hlines=[threshold])
    ax = fig.axes[0]
    if "selected" in df:
        sel = df[df["selected"].astype(str).str.lower().isin(["true", "1", "1.0"])]
        ax.scatter(sel["layer"], sel["accuracy"], s=50, facecolors="none", edgecolors="black", zorder=3,
                   label="selected")
        ax.legend(fontsize="x-small", ncols=2)
    return fig


def effect_vs_factor(df: pd.DataFrame, *, control: str = "random_neurons", panel: str = "target",
                     title: str = "Effect vs scaling factor") -> Figure:
    """Effect (estimate with CI) against factor, one panel per ``panel`` level (rows: metrics).

    Rows whose method is ``control`` form a band: the envelope of their CIs at each factor, with
    their mean estimate dashed. Other methods are lines with error bars (duplicates averaged).
    """
    cols = ["method", "factor", "estimate", "ci_low", "ci_high"]
    df = require_columns(df, cols, "effect vs factor").copy()
    df["_panel"] = df[panel].astype(str) if panel in df else "all"
    df["_metric"] = df["metric"].astype(str) if "metric" in df else "effect"
    panels, metrics = list(dict.fromkeys(df["_panel"])), list(dict.fromkeys(df["_metric"]))
    fig, axes = new_figure(3.2 * len(panels) + 0.5, 2.8 * len(metrics) + 0.4, len(metrics), len(panels),
                           grid=True)
    for r, m in enumerate(metrics):
        for c, p in enumerate(panels):
            ax, sub = axes[r][c], df[(df["_metric"] == m) & (df["_panel"] == p)]
            ctrl = sub[sub["method"] == control].groupby("factor").agg(
                lo=("ci_low", "min"), hi=("ci_high", "max"), est=("estimate", "mean")).sort_index()
            factors = sorted(sub["factor"].unique())
            width = 0.06 * ((factors[-1] - factors[0]) if len(factors) > 1 else max(abs(factors[0]), 1.0))
            if len(ctrl) == 1:  # one factor: widen the band so that it shows
                ctrl = pd.concat([ctrl.set_axis(ctrl.index - 2 * width), ctrl.set_axis(ctrl.index + 2 * width)])
            if len(ctrl):
                ax.fill_between(ctrl.index, ctrl["lo"], ctrl["hi"], color="grey", alpha=0.3, label=control)
                ax.plot(ctrl.index, ctrl["est"], ls="--", color="grey")
            others = list(sub[sub["method"] != control].groupby("method", sort=False))
            for i, (meth, g) in enumerate(others):
                g = g.groupby("factor")[["estimate", "ci_low", "ci_high"]].mean().sort_index()
                err = np.clip(np.vstack([g["estimate"] - g["ci_low"], g["ci_high"] - g["estimate"]]), 0, None)
                x = g.index + (i - (len(others) - 1) / 2) * width / max(1, len(others) - 1)  # dodge
                ax.errorbar(x, g["estimate"], yerr=np.nan_to_num(err), marker="o", capsize=3,
                            color=f"C{i % 10}", label=str(meth))
            ax.axhline(0, color="black", lw=0.6)
            ax.set_title(f"{p}" if len(metrics) == 1 else f"{p}: {m}", fontsize="small")
            ax.set_xlabel("factor")
            if c == 0:
                ax.set_ylabel(m)
            if r == 0 and c == 0:
                ax.legend(fontsize="x-small")
    fig.suptitle(title)
    return fig


def circumplex_scatter(df: pd.DataFrame, *, angles: Mapping[str, float] | None = None, r2: float | None = None,
                       title: str = "Circumplex: PCA of value vectors vs theory") -> Figure:
    """Measured 2-D positions (value, x, y) against the theoretical circle.

    Theory points come from columns theory_x/theory_y when present, else from ``angles``
    (degrees; default equal angles) via :func:`mechvalue.core.values.circle_coordinates`.
    """
    require_columns(df, ["value", "x", "y"], "circumplex coordinates")
    names = [canonical(str(v)) for v in df["value"]]
    if "theory_x" in df and "theory_y" in df:
        theory = dict(zip(names, zip(df["theory_x"], df["theory_y"])))
    else:
        theory = dict(zip(VALUES, circle_coordinates(dict(angles) if angles else None)))
    fig, ax = new_figure(5.5, 5.5)
    ax.add_patch(Circle((0, 0), 1.0, fill=False, ls="--", color="grey"))
    for i, (v, x, y) in enumerate(zip(names, df["x"], df["y"])):
        tx, ty = theory[v]
        ax.plot([x, tx], [y, ty], color="lightgrey", lw=0.8, zorder=1)
        ax.scatter([tx], [ty], facecolors="none", edgecolors="grey", s=40, zorder=2)
        ax.scatter([x], [y], color=f"C{i % 10}", s=45, zorder=3)
        ax.annotate(display_label(v), (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    lim = 1.15 * max(1.0, float(np.nanmax(np.abs(df[["x", "y"]].to_numpy(float)))))
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel="PC1 (aligned)", ylabel="PC2 (aligned)")
    ax.set_title(title + (f"\nProcrustes R² = {r2:.2f}" if r2 is not None and math.isfinite(r2) else ""),
                 fontsize="medium")
    return fig


def neuron_class_scatter(df: pd.DataFrame, *, facet: str | None = None, max_points: int = 4000,
                         title: str = "Neurons in the shared/unique plane") -> Figure:
    """Neuron projections (x = shared axis, y = intrinsic-unique axis) coloured by class; one panel per ``facet``."""
    require_columns(df, ["x", "y", "class"] + ([facet] if facet else []), "neuron classes")
    levels = list(dict.fromkeys(df[facet])) if facet else [None]
    if facet and canonical_or_none(levels) is not None:
        levels.sort(key=lambda v: VALUES.index(canonical(str(v))))
    ncols = min(5, len(levels))
    nrows = math.ceil(len(levels) / ncols)
    fig, axes = new_figure(2.8 * ncols + 0.5, 2.8 * nrows + 0.5, nrows, ncols, grid=True)
    for k, ax in enumerate(np.ravel(axes)):
        if k >= len(levels):
            ax.set_axis_off()
            continue
        sub = df if facet is None else df[df[facet] == levels[k]]
        if len(sub) > max_points:
            sub = sub.sample(max_points, random_state=0)
        for cls, g in sub.groupby("class", sort=False):
            ax.scatter(g["x"], g["y"], s=6, alpha=0.7, color=CLASS_COLORS.get(str(cls), "C9"), label=str(cls))
        for dx, dy in ((1, 0), (0, 1), (0, -1)):  # u_shared, u_int, u_prompt anchors
            ax.axline((0, 0), (dx, dy), color="black", lw=0.5, ls=":")
        ax.set_title(str(display_label(str(levels[k]))) if facet else "", fontsize="small")
        ax.set_aspect("equal", adjustable="datalim")
        if k == 0:
            ax.legend(fontsize="x-small", markerscale=2)
    fig.supxlabel("shared axis")
    fig.supylabel("unique axis (+ intrinsic, - prompted)")
    fig.suptitle(title)
    return fig


def class_count_bars(df: pd.DataFrame, *, classes: Sequence[str] = ("shared", "intrinsic", "prompted"),
                     title: str = "Neuron classes per value (summed over layers)") -> Figure:
    """Stacked bars of neuron-class counts per value (columns value and the class names)."""
    require_columns(df, ["value", *classes], "class counts")
    g = df.assign(value=[canonical(str(v)) for v in df["value"]]).groupby("value")[list(classes)].sum()
    g = g.reindex([v for v in VALUES if v in g.index])
    fig, ax = new_figure(6.5, 3.6)
    bottom = np.zeros(len(g))
    for c in classes:
        ax.bar([display_label(v) for v in g.index], g[c], bottom=bottom, label=c, color=CLASS_COLORS.get(c))
        bottom += g[c].to_numpy(float)
    ax.set(title=title, ylabel="neurons")
    ax.legend(fontsize="x-small")
    return fig
