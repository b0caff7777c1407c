"""Figures from small synthetic data: each returns a Figure with the expected elements; bad shapes fail clearly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mechvalue.core.errors import MechvalueError
from mechvalue.core.values import CODES, VALUES
from mechvalue.report import figures as viz

RNG = np.random.default_rng(0)


def _tick_labels(ax, axis="x"):
    return [t.get_text() for t in (ax.get_xticklabels() if axis == "x" else ax.get_yticklabels())]


def test_save_figure_writes_png(tmp_path):
    fig, ax = viz.new_figure()
    ax.plot([0, 1], [0, 1])
    path = viz.save_figure(fig, tmp_path / "sub" / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "sub").glob(".*tmp"))


def test_radar_chart_one_polygon_per_method():
    rows = [{"method": m, "value": v, "score": float(s)} for m in ("base", "conva")
            for v, s in zip(VALUES, RNG.uniform(3, 5, 10))]
    fig = viz.radar_chart(pd.DataFrame(rows))
    ax = fig.axes[0]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["base", "conva"]
    assert len(ax.lines) == 2 and len(ax.lines[0].get_xdata()) == 11  # closed polygon
    assert {t.get_text() for t in ax.get_xticklabels()} == set(CODES.values())
    # a mapping of ten scores works too, negative scores included
    fig2 = viz.radar_chart({"base": RNG.normal(size=10), "steered": RNG.normal(size=10)})
    assert len(fig2.axes[0].lines) == 2


def test_radar_chart_subset_of_values():
    rows = [{"method": "base", "value": v, "score": 0.5} for v in ("power", "security", "hedonism", "tradition")]
    ax = viz.radar_chart(pd.DataFrame(rows)).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["TR", "SE", "PO", "HE"]  # circumplex order


def test_radar_chart_errors():
    with pytest.raises(MechvalueError, match="expected 10"):
        viz.radar_chart({"base": [1, 2, 3]})
    with pytest.raises(MechvalueError, match="at least 3"):
        viz.radar_chart(pd.DataFrame({"method": ["base"], "value": ["power"], "score": [1.0]}))
    gap = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 2, "value": ["power", "security", "hedonism"] * 1
                        + ["power", "security"], "score": [1.0] * 5})
    with pytest.raises(MechvalueError, match=r"missing for \{'b': \['hedonism'\]\}"):
        viz.radar_chart(gap)
    with pytest.raises(MechvalueError, match="column"):
        viz.radar_chart(pd.DataFrame({"method": ["base"], "value": ["power"]}))
    with pytest.raises(MechvalueError, match="not a Schwartz value|Unknown|unknown"):
        viz.radar_chart(pd.DataFrame({"method": ["b"], "value": ["cheese"], "score": [1.0]}))


def test_layer_histogram_stacks_sets_with_relative_depth():
    rows = [{"set": s, "layer": layer, "relative_depth": layer / 29, "count": int(RNG.integers(0, 5))}
            for s in ("openness_to_change", "conservation") for layer in range(30)]
    fig = viz.layer_histogram(pd.DataFrame(rows))
    ax = fig.axes[0]
    assert len(ax.containers) == 2 and len(ax.containers[0]) == 30
    assert any("relative depth" in a.get_xlabel() for a in fig.axes[0].child_axes)
    with pytest.raises(MechvalueError, match="count"):
        viz.layer_histogram(pd.DataFrame({"set": ["a"], "layer": [1]}))


def test_probe_accuracy_curves_mark_selected_and_threshold():
    rows = [{"value": v, "layer": layer, "accuracy": 0.5 + 0.015 * layer, "selected": layer == 20}
            for v in VALUES for layer in range(30)]
    fig = viz.probe_accuracy_curves(pd.DataFrame(rows))
    ax = fig.axes[0]
    assert len([ln for ln in ax.lines if len(ln.get_xdata()) == 30]) == 10
    assert any(list(ln.get_ydata()) == [0.9, 0.9] for ln in ax.lines)  # threshold line
    assert len(ax.collections[0].get_offsets()) == 10  # one selected marker per value


def test_effect_vs_factor_band_and_lines():
    rows = []
    for f in (1.0, 2.0, 4.0):
        rows.append({"method": "valuelocate", "target": "conservation", "metric": "delta_q", "factor": f,
                     "estimate": 0.1 * f, "ci_low": 0.1 * f - 0.05, "ci_high": 0.1 * f + 0.05})
        for arm in range(3):
            rows.append({"method": "random_neurons", "target": "conservation", "metric": "delta_q", "factor": f,
                         "estimate": 0.01 * arm, "ci_low": -0.05, "ci_high": 0.05 + 0.01 * arm})
    fig = viz.effect_vs_factor(pd.DataFrame(rows))
    ax = fig.axes[0]
    assert len(ax.collections) >= 1  # the random band
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["random_neurons", "valuelocate"]
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].max() == pytest.approx(0.07)  # envelope of the control CIs
    with pytest.raises(MechvalueError, match="factor"):
        viz.effect_vs_factor(pd.DataFrame({"method": ["x"], "estimate": [1.0]}))


def test_circumplex_scatter_draws_circle_and_theory():
    theta = np.deg2rad(np.arange(10) * 36 + 10)
    df = pd.DataFrame({"value": VALUES, "x": 0.9 * np.cos(theta), "y": 0.9 * np.sin(theta)})
    fig = viz.circumplex_scatter(df, r2=0.66)
    ax = fig.axes[0]
    assert len(ax.patches) == 1  # the unit circle
    assert len(ax.collections) == 20  # measured + theoretical points
    assert "0.66" in ax.get_title()
    assert {t.get_text() for t in ax.texts} == set(CODES.values())
    with pytest.raises(MechvalueError, match="missing column"):
        viz.circumplex_scatter(df.drop(columns="y"))


def test_neuron_class_scatter_facets():
    n = 60
    df = pd.DataFrame({"value": np.repeat(["power", "benevolence", "hedonism"], n // 3),
                       "x": RNG.normal(size=n), "y": RNG.normal(size=n),
                       "class": RNG.choice(["shared", "intrinsic", "prompted", "unassigned"], n)})
    fig = viz.neuron_class_scatter(df, facet="value")
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert titles == ["BE", "PO", "HE"]  # circumplex order
    single = viz.neuron_class_scatter(df)
    assert len(single.axes[0].collections) == 4
    with pytest.raises(MechvalueError, match="class"):
        viz.neuron_class_scatter(df.drop(columns="class"))


def test_method_comparison_bars_with_ci_and_nan():
    summary = pd.DataFrame({"method": ["base", "conva", "neva"], "control_success": [0.3, 0.6, 0.55],
                            "cs_ci_low": [0.2, 0.5, 0.4], "cs_ci_high": [0.4, 0.7, 0.7],
                            "mmlu": [0.3, 0.28, np.nan], "judged": [np.nan] * 3})
    fig = viz.method_comparison_bars(summary)
    titles = [a.get_title() for a in fig.axes]
    assert titles == ["control_success", "mmlu"]  # all-NaN metric skipped
    assert len(fig.axes[0].patches) == 3
    assert _tick_labels(fig.axes[0]) == ["base", "conva", "neva"]
    with pytest.raises(MechvalueError, match="no metric"):
        viz.method_comparison_bars(summary[["method", "judged"]])


def test_method_comparison_bars_long_ci_names_and_extra_metrics():
    summary = pd.DataFrame({"method": ["base", "conva"], "control_success": [0.3, 0.6],
                            "control_success_ci_low": [0.2, 0.4], "control_success_ci_high": [0.4, 0.9],
                            "custom": [1.0, 2.0], "custom_ci_low": [0.5, 1.5], "custom_ci_high": [1.5, 2.5]})
    assert viz.summary_metrics(summary) == ["control_success", "custom"]
    assert viz.ci_columns(summary, "control_success") == ("control_success_ci_low", "control_success_ci_high")
    fig = viz.method_comparison_bars(summary)
    bars = next(c for c in fig.axes[0].containers if hasattr(c, "errorbar"))
    err = bars.errorbar.lines[2][0].get_segments()
    assert [tuple(seg[:, 1]) for seg in err] == [pytest.approx((0.2, 0.4)), pytest.approx((0.4, 0.9))]


def test_effect_vs_factor_single_factor_band_is_visible():
    rows = [{"method": m, "factor": 2.0, "estimate": e, "ci_low": e - 0.1, "ci_high": e + 0.1}
            for m, e in (("valuelocate", 0.5), ("mean_diff", 0.3), ("random_neurons", 0.0))]
    ax = viz.effect_vs_factor(pd.DataFrame(rows)).axes[0]
    xs = ax.collections[0].get_paths()[0].vertices[:, 0]
    assert xs.max() - xs.min() > 0.1
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"random_neurons", "valuelocate", "mean_diff"}


def test_line_plot_and_class_count_bars():
    df = pd.DataFrame({"tau": [0.01, 0.03, 0.05], "fraction": [0.01, 0.004, 0.001]})
    fig = viz.line_plot(df, "tau", "fraction", vlines=[0.03], hlines=[0.004], logy=True)
    assert fig.axes[0].get_yscale() == "log"
    counts = pd.DataFrame({"value": ["power", "power", "tradition"], "layer": [1, 2, 1],
                           "shared": [3, 1, 2], "intrinsic": [1, 1, 0], "prompted": [0, 2, 1]})
    fig = viz.class_count_bars(counts)
    ax = fig.axes[0]
    assert _tick_labels(ax) == ["TR", "PO"]
    assert [p.get_height() for p in ax.containers[0]] == [2, 4]


def test_split_modules_are_reexported():
    from mechvalue.report import figure_base as viz_base
    from mechvalue.report import heatmaps as viz_heatmaps
    from mechvalue.report import tokens as viz_tokens

    for mod in (viz_base, viz_heatmaps, viz_tokens):
        for name in dir(mod):
            obj = getattr(mod, name)
            if not name.startswith("_") and getattr(obj, "__module__", None) == mod.__name__:
                assert getattr(viz, name) is obj, name
    for name in ("CI_COLUMNS", "SUMMARY_METRICS", "as_matrix", "tokens_html", "neuron_activation_view",
                 "matrix_heatmap", "leakage_heatmap", "nglr_heatmap", "cosine_heatmap"):
        assert name in viz.__all__ and hasattr(viz, name), name
