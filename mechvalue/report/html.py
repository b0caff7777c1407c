"""One self-contained HTML report of a run folder.

:func:`build_report` reads a run folder (no model needed) and writes ``report.html``: inline CSS,
figures embedded as base64 PNG (also saved to ``figures/``), no JavaScript and no external
resource. It opens with a summary (one verdict sentence per steering method, ValueLocate's and the
dual vectors' causal verdicts), then the run (settings, wall time per step), the method comparison,
sample sizes with minimum detectable effects, example generations, the paper anchors, one section
per method, the neuron audits, a glossary of the metrics and all results; it links ``docs/methods.md``.
Undefined numbers show as "–" with a footnote, never "nan" or 0. Sections that have no files are
skipped with a short note; a file that cannot be rendered gives a visible problem note (class
``problem``, for real failures only) instead of aborting the report.

The paper anchors live in :mod:`mechvalue.report.anchors` and the headless-browser check in
:mod:`mechvalue.report.browser`; :func:`anchor_table`, :data:`ANCHORS`, :func:`check_in_browser` and
:func:`find_chromium` are re-exported here.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mechvalue.core.artifacts import atomic_path, write_text_atomic
from mechvalue.core.errors import MechvalueError
from mechvalue.methods.registry import METHOD_NAMES, STEERING_METHODS
from mechvalue.methods.registry import label as method_label
from mechvalue.report import figures as viz
from mechvalue.report.anchors import ANCHORS, anchor_table
from mechvalue.report.browser import check_in_browser, find_chromium
from mechvalue.report.cards import render_audits
from mechvalue.report.circuits import render_circuits
from mechvalue.report.compliance import render_compliance
from mechvalue.report.examples import render_examples
from mechvalue.report.glossary import render_glossary
from mechvalue.report.judging import render_judges
from mechvalue.report.sections import methods_doc_link, render_run, render_samples, render_summary
from mechvalue.report.summary import with_undefined_nlr
from mechvalue.report.tables import (
    DUAL_TYPES,
    RENDER_ERRORS,
    EmptyTable,
    escape_html,
    format_number,
    on_target,
    read_json_file,
    read_table,
)

__all__ = ["ANCHORS", "anchor_table", "build_report", "check_in_browser", "find_chromium"]

_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ccc;padding-top:.6em}nav a{margin-right:1em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:left}th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%}figcaption{font-size:.85em;color:#555}
.note{color:#666;font-style:italic}.problem{color:#a00;background:#fee;padding:4px}.card{border:1px solid #ccc;
border-radius:6px;padding:.5em 1em;margin:.6em 0}.ex{margin:.3em 0;line-height:1.7}.max{color:#555;font-size:.8em;
margin-right:.6em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:6px}"""


class _Page:
    """Accumulates HTML parts; saves and embeds figures; contains rendering failures."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.fig_dir = run_dir, run_dir / "figures"
        self.parts: list[str] = []
        self.toc: list[tuple[str, str]] = []
        self.figures: list[str] = []

    def section(self, sid: str, title: str) -> None:
        self.toc.append((sid, title))
        self.parts.append(f'<h2 id="{sid}">{escape_html(title)}</h2>')

    def add(self, raw: str) -> None:
        self.parts.append(raw)

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{escape_html(text)}</p>')

    def problem(self, what: str, exc: Exception) -> None:
        self.parts.append(f'<p class="problem">could not render {escape_html(what)}: {escape_html(exc)}</p>')

    def table(self, df: pd.DataFrame, fmt: str = ".3f") -> None:
        """A table; undefined cells (NaN, None, infinite) show "–" and get a footnote."""
        undefined = []

        def cell(v) -> str:
            if v is None or (isinstance(v, float | np.floating) and not math.isfinite(v)) or v is pd.NA:
                undefined.append(1)
                return "–"
            return format_number(v, fmt) if isinstance(v, float | np.floating) else escape_html(v)
        head = "".join(f"<th>{escape_html(c)}</th>" for c in df.columns)
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                       for row in df.itertuples(index=False))
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")
        if undefined:
            self.parts.append('<p class="note">–: undefined or not measured (never 0; see the '
                              '<a href="#glossary">glossary</a>).</p>')

    def guard(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except RENDER_ERRORS as exc:
            self.problem(what, exc)

    def figure(self, name: str, build: Callable[[], object], caption: str = "") -> None:
        def run():
            png = viz.figure_png(build())
            fname = re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".png"
            with atomic_path(self.fig_dir / fname) as tmp:
                tmp.write_bytes(png)
            self.figures.append(fname)
            self.parts.append(f'<figure><img alt="{escape_html(name)}" src="data:image/png;base64,'
                              f'{base64.b64encode(png).decode()}"><figcaption>{escape_html(caption or name)}'
                              f"</figcaption></figure>")
        self.guard(f"figure {name}", run)


def _csv_or_note(page: _Page, rel: str, optional: bool = False) -> pd.DataFrame | None:
    """The CSV, or None with a note (missing; none when ``optional``) or a problem note (unreadable)."""
    try:
        df = read_table(page.run_dir, rel)
    except EmptyTable as exc:
        page.note(f"{exc}.")
        return None
    except RENDER_ERRORS as exc:
        page.problem(rel, exc)
        return None
    if df is None and not optional:
        page.note(f"{rel}: not in this run.")
    return df


# ------------------------------------------------------------------ sections

def _comparison(page: _Page) -> None:
    summary = _csv_or_note(page, "steering/summary.csv")
    if summary is not None:
        summary = summary.iloc[sorted(range(len(summary)), key=lambda i: method_order(summary["method"].iloc[i]))]
        summary = with_undefined_nlr(summary)
        out = summary[["method"]].copy()
        out.insert(1, "label", [method_label(m) for m in summary["method"]])
        nan = [math.nan] * len(summary)
        for m in viz.summary_metrics(summary):
            lo, hi = viz.ci_columns(summary, m)
            rows = zip(summary[m], summary[lo] if lo else nan, summary[hi] if hi else nan)
            out[m] = [f"{format_number(e)}" + (f" [{format_number(a)}, {format_number(b)}]" if lo and a == a else "")
                      for e, a, b in rows]
        page.table(out.astype(str))
        if out.map(lambda x: str(x).startswith("–")).to_numpy().any():
            page.note("–: undefined or not measured, never 0. NLR is undefined for the base arm (nothing to leak) "
                      "and for an edit that left its target unchanged (leakage per unit of target gain has no "
                      "gain to divide by).")
        page.figure("comparison_bars", lambda: viz.method_comparison_bars(summary),
                    "Steering methods compared (bars: estimate; error bars: 95% CI).")
        known = [m for m in STEERING_METHODS if m.name in set(summary["method"])]
        if known:
            page.add("<ul>" + "".join(f"<li><b>{escape_html(m.name)}</b> ({escape_html(m.label)}): "
                                      f"{escape_html(m.description)}</li>" for m in known) + "</ul>")
    radar = _csv_or_note(page, "steering/radar.csv")
    if radar is not None:
        page.figure("comparison_radar", lambda: viz.value_score_chart(radar, title="Judged score of the steered value"),
                    "Mean judged score of each target value when steering it, per method (a radar from 3 values; "
                    "bars below 3).")


def _valuelocate(page: _Page) -> None:
    frac = _csv_or_note(page, "valuelocate/fraction_vs_tau.csv")
    if frac is not None:
        cols = ["fraction"] + (["null_fraction"] if "null_fraction" in frac else [])
        long = frac.melt(id_vars="tau", value_vars=cols, var_name="selection", value_name="share")
        long["selection"] = long.selection.map({"fraction": "located", "null_fraction": "chance (split-half null)"})
        page.figure("valuelocate_fraction_vs_tau",
                    lambda: viz.line_plot(long.assign(percent=100 * long["share"]), "tau", "percent",
                                          hue="selection", title="Share of value neurons vs τ",
                                          ylabel="% of FFN neurons", vlines=[0.03], hlines=[0.4]),
                    "Selected share of FFN neurons against τ, and what the same rule selects by chance "
                    "(dotted: τ = 0.03; dashed: the paper's 0.4%).")
    counts = _csv_or_note(page, "valuelocate/layer_counts.csv")
    if counts is not None:
        page.figure("valuelocate_layers", lambda: viz.layer_histogram(counts), "Value neurons per layer and set.")
    causal = _csv_or_note(page, "valuelocate/causal.csv")
    if causal is not None:
        page.figure("valuelocate_causal", lambda: viz.effect_vs_factor(on_target(causal)),
                    "On-target score shift vs scaling factor; grey band: matched random neurons (CI envelope).")


def _conva(page: _Page) -> None:
    acc = _csv_or_note(page, "conva/probe_accuracy.csv")
    if acc is not None:
        page.figure("conva_probe_accuracy", lambda: viz.probe_accuracy_curves(acc),
                    "Probe accuracy per layer (circles: selected layers; dashed: 0.9).")
    cos = _csv_or_note(page, "conva/cosine_matrix.csv")
    if cos is not None:
        page.figure("conva_cosines", lambda: viz.cosine_heatmap(cos), "Cosines between ConVA value vectors.")


def method_order(name: str) -> tuple[int, str]:
    """Sort key: the registry's order of steering methods, then unknown names alphabetically."""
    return (METHOD_NAMES.index(name), "") if name in METHOD_NAMES else (len(METHOD_NAMES), str(name))


def _methods_of(run_dir: Path, prefix: str) -> list[str]:
    """Methods with a ``steering/<prefix><method>.csv`` table, in the registry's order."""
    return sorted((p.stem[len(prefix):] for p in (run_dir / "steering").glob(f"{prefix}*.csv")), key=method_order)


def _neva(page: _Page) -> None:
    run_dir = page.run_dir
    leak = _methods_of(run_dir, "leakage_")
    if not leak:
        page.note("steering/leakage_<method>.csv: not in this run.")
    page.add('<div class="grid">')
    for m in leak:
        df = _csv_or_note(page, f"steering/leakage_{m}.csv")
        if df is not None:
            page.figure(f"leakage_{m}", lambda df=df, m=m: viz.leakage_heatmap(df, title=f"Leakage: {method_label(m)}"),
                        f"{method_label(m)}: score change of each value (columns) when steering each target (rows).")
    for kind in ("target_group", "group_group"):
        for m in _methods_of(run_dir, f"nglr_{kind}_"):
            df = _csv_or_note(page, f"steering/nglr_{kind}_{m}.csv")
            if df is not None:
                page.figure(f"nglr_{kind}_{m}", lambda df=df, m=m, k=kind: viz.nglr_heatmap(
                    df, kind=k, title=f"NGLR {k.replace('_', ' -> ')}: {method_label(m)}"),
                    f"{method_label(m)}: NGLR {kind}; grey cells marked – are undefined (no steered value in "
                    "that group, or no leakage to share out).")
    page.add("</div>")
    acc = _csv_or_note(page, "neva/probe_accuracy.csv", optional=True)
    if acc is not None:
        page.figure("neva_probe_accuracy", lambda: viz.probe_accuracy_curves(acc, title="NeVA neuron-probe accuracy"),
                    "Held-out accuracy of the sparse neuron probes per layer.")
    jac = _csv_or_note(page, "neva/jaccard.csv")
    if jac is not None:
        page.figure("neva_jaccard", lambda: viz.matrix_heatmap(jac, title="Jaccard overlap of NeVA neuron sets",
                                                                vmin=0.0, vmax=1.0), "Overlap of the neuron sets.")
    neurons = _csv_or_note(page, "neva/neurons.csv")
    if neurons is not None:
        def table():
            g = neurons.groupby("value").agg(neurons=("index", "size"), layers=("layer", "nunique"))
            if "sign" in neurons:
                g["positive"] = neurons.assign(p=pd.to_numeric(neurons["sign"], errors="coerce") > 0).groupby(
                    "value")["p"].sum()
            page.table(g.reset_index())
        page.guard("neva/neurons.csv", table)
        counts = neurons.groupby(["value", "layer"]).size().rename("count").reset_index().rename(
            columns={"value": "set"}) if {"value", "layer"} <= set(neurons.columns) else neurons
        page.figure("neva_layers", lambda: viz.layer_histogram(counts, title="NeVA neurons per layer"),
                    "NeVA neurons per layer, per value.")


def _dual(page: _Page) -> None:
    run_dir = page.run_dir
    structure = {}
    page.guard("dual/structure.json", lambda: structure.update(read_json_file(run_dir, "dual/structure.json") or {}))
    if structure:
        page.table(pd.DataFrame([(k, json.dumps(v)[:160] if isinstance(v, dict | list) else
                                  format_number(v) if isinstance(v, float) else str(v))
                                 for k, v in structure.items()], columns=["measure", "value"]))
    cos = _csv_or_note(page, "dual/cosines.csv")
    if cos is not None:
        page.figure("dual_cosines", lambda: viz.line_plot(cos, "layer", "cos_intrinsic_prompted", hue="value",
                                                          title="cos(v_intrinsic, v_prompted) per layer"),
                    "Cosine between intrinsic and prompted value vectors.")
        page.figure("dual_retained_norm", lambda: viz.line_plot(
            cos, "layer", "retained_norm_prompted_perp", hue="value", title="‖v_prompt⊥int‖ / ‖v_prompt‖",
            hlines=[0.32, 0.73]), "Norm kept by prompted⊥intrinsic (dashed: the paper's 32–73%).")
    counts = _csv_or_note(page, "dual/class_counts.csv")
    if counts is not None:
        page.figure("dual_class_counts", lambda: viz.class_count_bars(counts), "Neuron classes per value.")
    classes = _csv_or_note(page, "dual/neuron_classes.csv")
    if classes is not None:
        def scatter():
            sub, layer = classes, structure.get("layer")
            if "layer" in classes and classes["layer"].nunique() > 1:
                layer = layer if layer in set(classes["layer"]) else classes["layer"].mode().iloc[0]
                sub = classes[classes["layer"] == layer]
            facet = "value" if "value" in sub and sub["value"].nunique() > 1 else None
            return viz.neuron_class_scatter(sub, facet=facet, title=f"Neurons in the shared/unique plane"
                                            f"{'' if layer is None else f' (layer {layer})'}")
        page.figure("dual_neuron_classes", scatter, "W_out rows projected on the shared/unique axes, by class.")
    steering = _csv_or_note(page, "dual/steering.csv")
    if steering is not None:
        def bars():
            df = on_target(steering)
            pooled = df["arm"].astype(str).str.endswith("_pooled") if "arm" in df else pd.Series(False, df.index)
            if pooled.any():  # the random directions: their pooled rows only
                df = df[~((df["vector_type"] == "random") & ~pooled)]
            return _tidy_bars(df, "vector_type", "Dual steering by vector type", DUAL_TYPES + ("random",))
        page.figure("dual_steering", bars, "On-target effect per vector type (mean over targets; CI means).")
        if "neuron_class" in steering and steering["neuron_class"].notna().any():
            page.figure("dual_neuron_scaling", lambda: _class_bars(steering),
                        "Scaling each neuron class (largest β) vs matched random neurons, on-target effect.")
    circ = _csv_or_note(page, "dual/circumplex.csv")
    if circ is not None:
        placed = circ.dropna(subset=[c for c in ("x", "y") if c in circ]) if {"x", "y"} <= set(circ) else circ
        if len(placed) < 3:
            why = structure.get("circumplex")
            page.note(f"Circumplex omitted: placing values on the circle needs at least 3 values with shared axes; "
                      f"this run places {len(placed)} of {len(circ)}" + (f" ({why})." if isinstance(why, str) else "."))
        else:
            r2 = structure.get("r2")
            page.figure("dual_circumplex", lambda: viz.circumplex_scatter(placed, r2=None if r2 is None else float(r2)),
                        "Shared value axes: PCA + Procrustes against the theoretical circle (hollow).")
    cm = _csv_or_note(page, "dual/cosine_matrix.csv")
    if cm is not None:
        page.figure("dual_cosine_matrix", lambda: viz.cosine_heatmap(cm, title="Cosines of shared value axes"),
                    "Cosines between the shared value axes of the run's values.")


def _tidy_bars(df: pd.DataFrame, group: str, title: str, order: tuple[str, ...] = ()):
    """Bars of tidy rows (estimate, CI) averaged per ``group`` and metric, one panel per metric."""
    df = df.dropna(subset=[group]).groupby([group, "metric"], sort=False)[["estimate", "ci_low", "ci_high"]].mean()
    df = df.reset_index()
    wide = df.pivot(index=group, columns="metric", values="estimate")
    for s in ("ci_low", "ci_high"):
        wide = wide.join(df.pivot(index=group, columns="metric", values=s).add_suffix(f"_{s}"))
    wide = wide.reindex(sorted(wide.index, key=lambda t: (order + (t,)).index(t)))
    return viz.method_comparison_bars(wide.reset_index(), metrics=list(dict.fromkeys(df["metric"])), group=group,
                                      title=title)


def _class_bars(steering: pd.DataFrame):
    df = on_target(steering)
    df = df[df["neuron_class"].notna() & df["metric"].astype(str).str.startswith("delta_")]
    if "beta" in df:
        df = df[df["beta"] == df["beta"].max()]
    return _tidy_bars(df, "neuron_class", "Neuron-class scaling", ("shared", "intrinsic", "prompted", "random"))


def _results(page: _Page, limit: int = 300) -> None:
    df = _csv_or_note(page, "results.csv")
    if df is None:
        return
    page.note(f"{len(df)} rows; methods: {', '.join(map(str, df.get('method', pd.Series()).unique()))}.")
    page.add(f"<details><summary>first {min(limit, len(df))} rows</summary>")
    page.table(df.head(limit))
    page.add("</details>")


# ------------------------------------------------------------------ the page

def build_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` (self-contained) and ``run_dir/figures/*.png``; return the HTML path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MechvalueError(f"run folder {run_dir} does not exist")
    page = _Page(run_dir)
    cfg = {}
    page.guard("config.json", lambda: cfg.update(read_json_file(run_dir, "config.json") or {}))
    methods = methods_doc_link(run_dir)
    page.section("summary", "Summary")
    page.guard("summary", lambda: render_summary(page))
    page.section("run", "Run")
    page.guard("config.json", lambda: render_run(page))
    page.section("comparison", "Method comparison")
    _comparison(page)
    page.section("samples", "Sample sizes and detectable effects")
    page.guard("sample sizes", lambda: render_samples(page, cfg))
    page.section("examples", "Example generations")
    page.guard("examples", lambda: render_examples(page, cfg))
    page.section("anchors", "Paper anchors")
    page.add(f'<p class="note">Paper numbers come from 7B-class models ({methods} §8); ours from '
             f"{escape_html((cfg.get('model') or {}).get('model_id', 'this run'))}. Compare directions and orders "
             f"of magnitude.</p>")
    page.guard("anchor table", lambda: page.table(anchor_table(run_dir)))
    for sid, title, fn in (("valuelocate", "ValueLocate: value neurons", _valuelocate),
                           ("conva", "ConVA: gated value vectors", _conva),
                           ("neva", "NeVA and leakage", _neva), ("dual", "Dual mechanisms", _dual),
                           ("compliance", "The compliance channel (mean delta)", render_compliance),
                           ("circuits", "Where the value prompt acts", render_circuits),
                           ("judges", "Judges: validity on this model's generations", render_judges),
                           ("audits", "Neuron audits", render_audits),
                           ("glossary", "Glossary of metrics", render_glossary),
                           ("results", "All results (results.csv)", _results)):
        page.section(sid, title)
        page.guard(title, lambda fn=fn: fn(page))
    model = (cfg.get("model") or {}).get("model_id", "")
    nav = "".join(f'<a href="#{sid}">{escape_html(t)}</a>' for sid, t in page.toc)
    doc = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>mechvalue report {escape_html(model)}'
           f"</title><style>{_CSS}</style></head><body><h1>mechvalue report</h1><p>{escape_html(run_dir.resolve())}</p>"
           f"<p>Methods, formulas and how this project's defaults differ from the papers: {methods}.</p>"
           f"<nav>{nav}</nav>{''.join(page.parts)}</body></html>\n")
    out = run_dir / "report.html"
    write_text_atomic(out, doc)
    return out
