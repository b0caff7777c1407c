"""One self-contained HTML report of a run folder, and a headless-browser check of it.

:func:`build_report` reads a run folder (no model needed) and writes ``report.html``: inline CSS,
figures embedded as base64 PNG (also saved to ``figures/``), no JavaScript and no external
resource. Sections that have no files are skipped with a short note; a file that cannot be
rendered gives a visible problem note instead of aborting the report.

:func:`check_in_browser` loads a page in headless Chromium over the DevTools protocol (stdlib
only, ``--remote-debugging-pipe``) and returns its console errors, uncaught exceptions, error
log entries and requests to external URLs; it can save a full-page screenshot.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from . import viz
from ._io import atomic_path, write_text_atomic
from .errors import MechvalueError
from .values import ADJACENT_PAIRS, OPPOSITE_PAIRS, canonical

_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ccc;padding-top:.6em}nav a{margin-right:1em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:left}th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%}figcaption{font-size:.85em;color:#555}
.note{color:#666;font-style:italic}.problem{color:#a00;background:#fee;padding:4px}.card{border:1px solid #ccc;
border-radius:6px;padding:.5em 1em;margin:.6em 0}.ex{margin:.3em 0;line-height:1.7}.max{color:#555;font-size:.8em;
margin-right:.6em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:6px}"""
_RENDER_ERRORS = (MechvalueError, ValueError, KeyError, TypeError, OSError)
_DUAL_TYPES = ("intrinsic", "prompted", "intrinsic_perp", "prompted_perp")


def _esc(x) -> str:
    return html.escape(str(x))


def _num(x, fmt: str = ".3f") -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return _esc(x)
    return "–" if not math.isfinite(x) else format(x, fmt)


def _duration(seconds: float) -> str:
    s = int(round(float(seconds)))
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60} s" if s < 3600 else f"{s // 3600} h {s % 3600 // 60} min"


class _Page:
    """Accumulates HTML parts; saves and embeds figures; contains rendering failures."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.fig_dir = run_dir, run_dir / "figures"
        self.parts: list[str] = []
        self.toc: list[tuple[str, str]] = []
        self.figures: list[str] = []

    def section(self, sid: str, title: str) -> None:
        self.toc.append((sid, title))
        self.parts.append(f'<h2 id="{sid}">{_esc(title)}</h2>')

    def add(self, raw: str) -> None:
        self.parts.append(raw)

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{_esc(text)}</p>')

    def problem(self, what: str, exc: Exception) -> None:
        self.parts.append(f'<p class="problem">could not render {_esc(what)}: {_esc(exc)}</p>')

    def table(self, df: pd.DataFrame, fmt: str = ".3f") -> None:
        head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
        body = "".join("<tr>" + "".join(f"<td>{_num(v, fmt) if isinstance(v, float) else _esc(v)}</td>"
                                        for v in row) + "</tr>" for row in df.itertuples(index=False))
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def guard(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except _RENDER_ERRORS as exc:
            self.problem(what, exc)

    def figure(self, name: str, build: Callable[[], object], caption: str = "") -> None:
        def run():
            png = viz.figure_png(build())
            fname = re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".png"
            with atomic_path(self.fig_dir / fname) as tmp:
                tmp.write_bytes(png)
            self.figures.append(fname)
            self.parts.append(f'<figure><img alt="{_esc(name)}" src="data:image/png;base64,'
                              f'{base64.b64encode(png).decode()}"><figcaption>{_esc(caption or name)}'
                              f"</figcaption></figure>")
        self.guard(f"figure {name}", run)


class _EmptyTable(MechvalueError):
    """A table file that exists but has no rows (e.g. nothing was selected)."""


def _read_csv(run_dir: Path, rel: str) -> pd.DataFrame | None:
    """The CSV at ``run_dir/rel``, or None when it does not exist; :class:`_EmptyTable` when it has no rows."""
    path = run_dir / rel
    if not path.exists():
        return None
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise _EmptyTable(f"{rel}: empty file") from exc
    if df.empty:
        raise _EmptyTable(f"{rel}: no rows")
    return df


def _read_json(run_dir: Path, rel: str):
    path = run_dir / rel
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MechvalueError(f"{rel} is not valid JSON ({exc})") from exc


def _csv_or_note(page: _Page, rel: str, optional: bool = False) -> pd.DataFrame | None:
    """The CSV, or None with a note (missing; none when ``optional``) or a problem note (unreadable)."""
    try:
        df = _read_csv(page.run_dir, rel)
    except _EmptyTable as exc:
        page.note(f"{exc}.")
        return None
    except _RENDER_ERRORS as exc:
        page.problem(rel, exc)
        return None
    if df is None and not optional:
        page.note(f"{rel}: not in this run.")
    return df


def _on_target(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose value is their target (all rows when there are none)."""
    if "value" in df and "target" in df:
        same = df[df["value"].astype(str) == df["target"].astype(str)]
        if len(same):
            return same
    return df


# ------------------------------------------------------------------ sections

def _header(page: _Page) -> dict:
    cfg = _read_json(page.run_dir, "config.json")
    if cfg is None:
        page.note("config.json: not in this run.")
        return {}
    model = cfg.get("model") or {}
    wall = cfg.get("wall_seconds", cfg.get("wall_seconds_last_invocation"))
    rows = [("model", model.get("model_id", "?")), ("weight processing", model.get("processing", "?")),
            ("command", cfg.get("command", "?")), ("seed", cfg.get("seed", "?")), ("quick", cfg.get("quick", "?")),
            ("values", ", ".join(map(str, cfg.get("values") or []))), ("started", cfg.get("started", "?")),
            ("wall time", _duration(wall) if isinstance(wall, int | float) else "not recorded")]
    rows += [(f"model.{k}", v) for k, v in model.items() if k not in ("model_id", "processing")]
    page.table(pd.DataFrame(rows, columns=["setting", "value"]).astype(str))
    for key, title in (("config", "run configuration"), ("versions", "package versions")):
        if isinstance(cfg.get(key), dict) and cfg[key]:
            items = [(k, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in sorted(cfg[key].items())]
            page.add(f"<details><summary>{title}</summary>")
            page.table(pd.DataFrame(items, columns=["key", "value"]))
            page.add("</details>")
    return cfg


def _comparison(page: _Page) -> None:
    summary = _csv_or_note(page, "steering/summary.csv")
    if summary is not None:
        out = summary[["method"]].copy()
        nan = [math.nan] * len(summary)
        for m in viz.summary_metrics(summary):
            lo, hi = viz.ci_columns(summary, m)
            out[m] = [f"{_num(e)}" + (f" [{_num(a)}, {_num(b)}]" if lo else "") for e, a, b in
                      zip(summary[m], summary[lo] if lo else nan, summary[hi] if hi else nan)]
        page.table(out.astype(str))
        page.figure("comparison_bars", lambda: viz.method_comparison_bars(summary),
                    "Steering methods compared (bars: estimate; error bars: 95% CI).")
    radar = _csv_or_note(page, "steering/radar.csv")
    if radar is not None:
        page.figure("comparison_radar", lambda: viz.radar_chart(radar), "Mean value score per value, per method.")


def _valuelocate(page: _Page) -> None:
    frac = _csv_or_note(page, "valuelocate/fraction_vs_tau.csv")
    if frac is not None:
        page.figure("valuelocate_fraction_vs_tau",
                    lambda: viz.line_plot(frac.assign(percent=100 * frac["fraction"]), "tau", "percent",
                                          title="Share of value neurons vs τ", ylabel="% of FFN neurons",
                                          vlines=[0.03], hlines=[0.4]),
                    "Selected share of FFN neurons against τ (dotted: τ = 0.03; dashed: the paper's 0.4%).")
    counts = _csv_or_note(page, "valuelocate/layer_counts.csv")
    if counts is not None:
        page.figure("valuelocate_layers", lambda: viz.layer_histogram(counts), "Value neurons per layer and set.")
    causal = _csv_or_note(page, "valuelocate/causal.csv")
    if causal is not None:
        page.figure("valuelocate_causal", lambda: viz.effect_vs_factor(_on_target(causal)),
                    "On-target score shift vs scaling factor; grey band: matched random neurons (CI envelope).")


def _conva(page: _Page) -> None:
    acc = _csv_or_note(page, "conva/probe_accuracy.csv")
    if acc is not None:
        page.figure("conva_probe_accuracy", lambda: viz.probe_accuracy_curves(acc),
                    "Probe accuracy per layer (circles: selected layers; dashed: 0.9).")
    cos = _csv_or_note(page, "conva/cosine_matrix.csv")
    if cos is not None:
        page.figure("conva_cosines", lambda: viz.cosine_heatmap(cos), "Cosines between ConVA value vectors.")


def _methods_of(run_dir: Path, prefix: str) -> list[str]:
    return sorted(p.stem[len(prefix):] for p in (run_dir / "steering").glob(f"{prefix}*.csv"))


def _neva(page: _Page) -> None:
    run_dir = page.run_dir
    leak = _methods_of(run_dir, "leakage_")
    if not leak:
        page.note("steering/leakage_<method>.csv: not in this run.")
    page.add('<div class="grid">')
    for m in leak:
        df = _csv_or_note(page, f"steering/leakage_{m}.csv")
        if df is not None:
            page.figure(f"leakage_{m}", lambda df=df, m=m: viz.leakage_heatmap(df, title=f"Leakage: {m}"),
                        f"{m}: score change of each value (columns) when steering each target (rows).")
    for kind in ("target_group", "group_group"):
        for m in _methods_of(run_dir, f"nglr_{kind}_"):
            df = _csv_or_note(page, f"steering/nglr_{kind}_{m}.csv")
            if df is not None:
                page.figure(f"nglr_{kind}_{m}", lambda df=df, m=m, k=kind: viz.nglr_heatmap(
                    df, kind=k, title=f"NGLR {k.replace('_', ' -> ')}: {m}"), f"{m}: NGLR {kind}.")
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
    page.guard("dual/structure.json", lambda: structure.update(_read_json(run_dir, "dual/structure.json") or {}))
    if structure:
        page.table(pd.DataFrame([(k, _num(v) if not isinstance(v, dict | list) else json.dumps(v)[:160])
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
            df = _on_target(steering)
            pooled = df["arm"].astype(str).str.endswith("_pooled") if "arm" in df else pd.Series(False, df.index)
            if pooled.any():  # the random directions: their pooled rows only
                df = df[~((df["vector_type"] == "random") & ~pooled)]
            return _tidy_bars(df, "vector_type", "Dual steering by vector type", _DUAL_TYPES + ("random",))
        page.figure("dual_steering", bars, "On-target effect per vector type (mean over targets; CI means).")
        if "neuron_class" in steering and steering["neuron_class"].notna().any():
            page.figure("dual_neuron_scaling", lambda: _class_bars(steering),
                        "Scaling each neuron class (largest β) vs matched random neurons, on-target effect.")
    circ = _csv_or_note(page, "dual/circumplex.csv")
    if circ is not None:
        r2 = structure.get("r2")
        page.figure("dual_circumplex", lambda: viz.circumplex_scatter(circ, r2=None if r2 is None else float(r2)),
                    "Shared value axes: PCA + Procrustes against the theoretical circle (hollow).")
    cm = _csv_or_note(page, "dual/cosine_matrix.csv")
    if cm is not None:
        page.figure("dual_cosine_matrix", lambda: viz.cosine_heatmap(cm, title="Cosines of shared value axes"),
                    "Cosines between the ten shared value axes.")


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
    df = _on_target(steering)
    df = df[df["neuron_class"].notna() & df["metric"].astype(str).str.startswith("delta_")]
    if "beta" in df:
        df = df[df["beta"] == df["beta"].max()]
    return _tidy_bars(df, "neuron_class", "Neuron-class scaling", ("shared", "intrinsic", "prompted", "random"))


def _audit_card(audit: dict, name: str, top: int = 5) -> str:
    idx, layer = audit.get("index"), audit.get("layer")
    head = (f"<b>{_esc(audit.get('kind', '?'))}</b>{'' if layer is None else f' layer {_esc(layer)}'}"
            f"{'' if idx is None else f', index {_esc(idx)}'} — {_esc(audit.get('label') or '')}")
    examples = sorted(audit.get("examples") or [], key=lambda e: -float(e.get("max", 0.0)))[:top]
    scale = max([abs(float(a)) for e in examples for a in (e.get("acts") or [])] or [1.0])
    rows = []
    for e in examples:
        body = (viz.tokens_html(e["tokens"], e.get("acts") or [], max_abs=scale, mark=e.get("argmax"))
                if e.get("tokens")
                else _esc(e.get("text", "")))
        rows.append(f'<div class="ex"><span class="max">max {_num(e.get("max"), ".2f")}</span>{body}</div>')
    return f'<div class="card"><div>{head} <span class="note">({_esc(name)})</span></div>{"".join(rows)}</div>'


def _audits(page: _Page) -> None:
    files = sorted((page.run_dir / "audits").glob("*.json"))
    if not files:
        page.note("audits/*.json: not in this run.")
    for f in files:
        page.guard(f"audits/{f.name}", lambda f=f: page.add(_audit_card(_read_json(page.run_dir,
                                                                                   f"audits/{f.name}"), f.name)))


def _results(page: _Page, limit: int = 300) -> None:
    df = _csv_or_note(page, "results.csv")
    if df is None:
        return
    page.note(f"{len(df)} rows; methods: {', '.join(map(str, df.get('method', pd.Series()).unique()))}.")
    page.add(f"<details><summary>first {min(limit, len(df))} rows</summary>")
    page.table(df.head(limit))
    page.add("</details>")


# ------------------------------------------------------------------ anchors

def _pick(df: pd.DataFrame, method: str, col: str) -> float:
    row = df[df["method"] == method]
    return float(row[col].iloc[0]) if len(row) and col in row else math.nan


def _dual_by_type(run_dir: Path, names: tuple[str, ...]) -> str | None:
    df = _read_csv(run_dir, "dual/steering.csv")
    if df is None:
        return None
    met = df["metric"].astype(str).str.lower().str.replace("-", "_")
    sub = _on_target(df[met.isin(names)])
    if sub.empty:
        return None
    means = sub.groupby(sub["vector_type"].astype(str).str.lower())["estimate"].mean()
    return " / ".join(_num(means.get(t), "+.3f") for t in _DUAL_TYPES)


def _anchor_values(run_dir: Path) -> dict[str, Callable[[], str | None]]:
    """Our number for each anchor key (functions; None when the run lacks the table)."""
    def summary():
        return _read_csv(run_dir, "steering/summary.csv")

    def structure(key, fmt=".2f"):
        s = _read_json(run_dir, "dual/structure.json")
        return None if s is None or key not in s else _num(s[key], fmt)

    def vl_fraction():
        df = _read_csv(run_dir, "valuelocate/fraction_vs_tau.csv")
        if df is None:
            return None
        r = df.iloc[(df["tau"] - 0.03).abs().argmin()]
        return f"{100 * r['fraction']:.2f}% at τ = {r['tau']:g}"

    def vl_depth():
        df = _read_csv(run_dir, "valuelocate/layer_counts.csv")
        if df is None:
            return None
        tot = df.groupby("layer")["count"].sum()
        return (f"mean relative depth {(df['relative_depth'] * df['count']).sum() / df['count'].sum():.2f}; "
                f"peak layer {tot.idxmax()}")

    def vl_causal():
        df = _read_csv(run_dir, "valuelocate/causal.csv")
        if df is None:
            return None
        df = _on_target(df)
        df = df[(df["factor"] == df["factor"].max()) & (df["metric"] == df["metric"].iloc[0])]
        est = df.groupby("method")["estimate"].mean()
        return (f"{df['metric'].iloc[0]} at factor {df['factor'].iloc[0]:g}: ValueLocate "
                f"{_num(est.get('valuelocate'), '+.3f')} vs random {_num(est.get('random_neurons'), '+.3f')}")

    def conva_csr():
        s = summary()
        if s is None:
            return None
        c, b = _pick(s, "conva", "control_success"), _pick(s, "base", "control_success")
        rel = f"{100 * (c - b) / b:+.1f}% relative, " if b else ""
        return f"{_num(c)} vs base {_num(b)} ({rel}{c - b:+.3f} absolute)"

    def conva_mmlu():
        s = summary()
        return None if s is None else " / ".join(_num(_pick(s, m, "mmlu")) for m in ("base", "conva", "conva_nogate"))

    def conva_cos():
        df = _read_csv(run_dir, "conva/cosine_matrix.csv")
        if df is None:
            return None
        m = viz.as_matrix(df, "conva/cosine_matrix.csv")
        mean = lambda pairs: sum(m.loc[canonical(a), canonical(b)] for a, b in pairs) / len(pairs)  # noqa: E731
        return f"adjacent pairs {mean(ADJACENT_PAIRS):+.2f} vs opposite pairs {mean(OPPOSITE_PAIRS):+.2f}"

    def neva_vs(other, cols=("control_success", "nlr", "mmlu")):
        s = summary()
        if s is None:
            return None
        return "; ".join(f"{c} {_num(_pick(s, 'neva', c))} vs {_num(_pick(s, other, c))}" for c in cols if c in s)

    def dual_norm():
        df = _read_csv(run_dir, "dual/cosines.csv")
        if df is None:
            return None
        s = _read_json(run_dir, "dual/structure.json") or {}
        if s.get("layer") in set(df["layer"]):
            df = df[df["layer"] == s["layer"]]
        col = df["retained_norm_prompted_perp"]
        return f"{col.min():.0%}–{col.max():.0%} across values"

    return {
        "vl_fraction": vl_fraction, "vl_depth": vl_depth, "vl_causal": vl_causal,
        "conva_csr": conva_csr, "conva_mmlu": conva_mmlu, "conva_cos": conva_cos,
        "neva_conva": lambda: neva_vs("conva"), "neva_random": lambda: neva_vs("random_neurons", ("control_success",)),
        "dual_pvq": lambda: _dual_by_type(run_dir, ("questionnaire", "pvq", "delta_questionnaire")),
        "dual_distinct": lambda: _dual_by_type(run_dir, ("distinct_2", "distinct2")),
        "dual_delta": lambda: structure("delta_share", ".0%"), "dual_norm": dual_norm,
        "dual_r2": lambda: structure("r2"),
    }


ANCHORS = (  # (key, method, anchor, paper value), from methods.md §8
    ("vl_fraction", "ValueLocate", "share of value neurons", "< 0.4% of FFN neurons at τ = 0.03"),
    ("vl_depth", "ValueLocate", "where they sit", "around layer 15 (relative depth ≈ 0.35–0.55)"),
    ("vl_causal", "ValueLocate", "scaling shifts value scores", "shift; beats other locators (qualitative)"),
    ("conva_csr", "ConVA", "control success vs base", "+29.6% (relative; Llama-2-7b-chat)"),
    ("conva_mmlu", "ConVA", "MMLU base / gated / no gate", "0.476 / 0.455 / 0.272"),
    ("conva_cos", "ConVA", "value-vector cosines", "mirror Schwartz groups (qualitative)"),
    ("neva_conva", "NeVA", "NeVA vs ConVA", "higher CSR, lower NLR, smaller MMLU drop (qualitative)"),
    ("neva_random", "NeVA", "NeVA vs random neurons", "NeVA neurons ≫ random neurons (qualitative)"),
    ("dual_pvq", "Dual", "PVQ gain: intrinsic / prompted / int⊥ / prompt⊥", "+1.74 / +2.21 / +0.47 / +1.62"),
    ("dual_distinct", "Dual", "Distinct-2: intrinsic / prompted / int⊥ / prompt⊥", "0.362 / 0.342 / 0.402 / 0.203"),
    ("dual_delta", "Dual", "variance of δ_s explained by δ̄", "48–68%"),
    ("dual_norm", "Dual", "norm kept by prompted⊥intrinsic", "32–73%"),
    ("dual_r2", "Dual", "circumplex Procrustes R²", "≈ 0.6–0.7"),
)


def anchor_table(run_dir: str | Path) -> pd.DataFrame:
    """Paper anchors (methods.md §8) next to this run's numbers: columns method, anchor, paper, ours."""
    run_dir, rows = Path(run_dir), []
    fns = _anchor_values(run_dir)
    for key, method, anchor, paper in ANCHORS:
        try:
            ours = fns[key]()
        except _EmptyTable as exc:
            ours = str(exc)
        except _RENDER_ERRORS as exc:
            ours = f"error: {exc}"
        rows.append((method, anchor, paper, "not in this run" if ours is None else ours))
    return pd.DataFrame(rows, columns=["method", "anchor", "paper", "ours"])


# ------------------------------------------------------------------ the page

def build_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` (self-contained) and ``run_dir/figures/*.png``; return the HTML path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MechvalueError(f"run folder {run_dir} does not exist")
    page = _Page(run_dir)
    page.section("run", "Run")
    cfg = {}
    page.guard("config.json", lambda: cfg.update(_header(page)))
    page.section("comparison", "Method comparison")
    _comparison(page)
    page.section("anchors", "Paper anchors")
    page.note(f"Paper numbers come from 7B-class models (methods.md §8); ours from "
              f"{(cfg.get('model') or {}).get('model_id', 'this run')}. Compare directions and orders of magnitude.")
    page.guard("anchor table", lambda: page.table(anchor_table(run_dir)))
    for sid, title, fn in (("valuelocate", "ValueLocate: value neurons", _valuelocate),
                           ("conva", "ConVA: gated value vectors", _conva),
                           ("neva", "NeVA and leakage", _neva), ("dual", "Dual mechanisms", _dual),
                           ("audits", "Neuron audits", _audits), ("results", "All results (results.csv)", _results)):
        page.section(sid, title)
        page.guard(title, lambda fn=fn: fn(page))
    model = (cfg.get("model") or {}).get("model_id", "")
    nav = "".join(f'<a href="#{sid}">{_esc(t)}</a>' for sid, t in page.toc)
    doc = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>mechvalue report {_esc(model)}'
           f"</title><style>{_CSS}</style></head><body><h1>mechvalue report</h1><p>{_esc(run_dir.resolve())}</p>"
           f"<nav>{nav}</nav>{''.join(page.parts)}</body></html>\n")
    out = run_dir / "report.html"
    write_text_atomic(out, doc)
    return out


# ------------------------------------------------------------------ headless browser check

def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary: ``$MECHVALUE_CHROMIUM`` or the first on PATH; None if absent."""
    env = os.environ.get("MECHVALUE_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _Cdp:
    """Chrome DevTools protocol over the NUL-delimited JSON pipe (fds 3 and 4 of the browser)."""

    def __init__(self, wfd: int, rfd: int, deadline: float):
        self.wfd, self.rfd, self.deadline, self.buf, self.next_id = wfd, rfd, deadline, b"", 0
        self.events: list[dict] = []

    def _read(self, until: float) -> dict | None:
        while b"\0" not in self.buf:
            ready, _, _ = select.select([self.rfd], [], [], max(0.0, until - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                raise MechvalueError("chromium closed the DevTools pipe (it exited)")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            os.write(self.wfd, json.dumps(msg).encode() + b"\0")
        except OSError as exc:
            raise MechvalueError(f"chromium closed the DevTools pipe (it exited): {exc}") from exc
        while True:
            reply = self._read(self.deadline)
            if reply is None:
                raise MechvalueError(f"chromium did not answer {method} in time")
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise MechvalueError(f"chromium: {method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def pump(self, seconds: float, stop: Callable[[dict], bool] = lambda m: False) -> None:
        """Collect events for ``seconds`` (or until ``stop(event)``)."""
        until = min(self.deadline, time.monotonic() + seconds)
        while (msg := self._read(until)) is not None:
            self.events.append(msg)
            if stop(msg):
                return


def _event_error(msg: dict) -> str | None:
    """A readable problem for a DevTools event, or None."""
    p, method = msg.get("params") or {}, msg.get("method")
    if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
        return "console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
    if method == "Runtime.exceptionThrown":
        d = p.get("exceptionDetails") or {}
        return "uncaught exception: " + str((d.get("exception") or {}).get("description") or d.get("text"))
    if method == "Log.entryAdded" and (p.get("entry") or {}).get("level") == "error":
        e = p["entry"]
        return f"log error: {e.get('text')} {e.get('url', '')}".strip()
    if method == "Network.requestWillBeSent":
        url = (p.get("request") or {}).get("url", "")
        if url.split(":", 1)[0] not in ("file", "data", "about", "blob", "chrome"):
            return f"external request: {url}"
    return None


def check_in_browser(html_path: str | Path, screenshot_path: str | Path | None = None, *,
                     chromium: str | None = None, timeout: float = 60.0, settle: float = 0.5,
                     width: int = 1280) -> list[str]:
    """Load ``html_path`` in headless Chromium; return its console errors (empty list = clean).

    Also reported: uncaught exceptions, error log entries (e.g. failed loads) and requests to
    non-file/data URLs. Saves a full-page PNG screenshot (height capped at 16,000 px) when
    ``screenshot_path`` is given. Raises MechvalueError when no browser is found or it fails.
    """
    html_path = Path(html_path).resolve()
    if not html_path.exists():
        raise MechvalueError(f"{html_path} does not exist")
    exe = chromium or find_chromium()
    if exe is None:
        raise MechvalueError("no Chromium found: install it (apt-get install chromium) or set MECHVALUE_CHROMIUM")
    import fcntl

    to_browser, from_browser = os.pipe(), os.pipe()

    def child_fds():  # the browser reads commands on fd 3 and writes replies on fd 4
        r = fcntl.fcntl(to_browser[0], fcntl.F_DUPFD, 10)
        w = fcntl.fcntl(from_browser[1], fcntl.F_DUPFD, 10)
        os.dup2(r, 3)
        os.dup2(w, 4)

    with tempfile.TemporaryDirectory(prefix="mechvalue-chromium-") as profile, tempfile.TemporaryFile() as log:
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                "--remote-debugging-pipe", "about:blank"]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=child_fds,
                                close_fds=False, start_new_session=True)
        os.close(to_browser[0])
        os.close(from_browser[1])
        cdp = _Cdp(to_browser[1], from_browser[0], time.monotonic() + timeout)
        try:
            target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            sid = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for method in ("Runtime.enable", "Log.enable", "Network.enable", "Page.enable"):
                cdp.call(method, session=sid)
            cdp.call("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, sid)
            nav = cdp.call("Page.navigate", {"url": html_path.as_uri()}, sid)
            if nav.get("errorText"):
                raise MechvalueError(f"chromium could not open {html_path}: {nav['errorText']}")
            cdp.pump(timeout, stop=lambda m: m.get("method") == "Page.loadEventFired")
            cdp.pump(settle)
            if screenshot_path is not None:
                size = cdp.call("Page.getLayoutMetrics", session=sid)
                size = size.get("cssContentSize") or size["contentSize"]
                clip = {"x": 0, "y": 0, "width": max(1, min(size["width"], 4000)),
                        "height": max(1, min(size["height"], 16000)), "scale": 1}
                shot = cdp.call("Page.captureScreenshot",
                                {"format": "png", "clip": clip, "captureBeyondViewport": True}, sid)
                with atomic_path(screenshot_path) as tmp:
                    tmp.write_bytes(base64.b64decode(shot["data"]))
            cdp.pump(0.05)
        except MechvalueError as exc:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-1500:]
            raise MechvalueError(f"{exc}; chromium output: {tail}") from exc
        finally:
            try:
                cdp.deadline = time.monotonic() + 5
                cdp.call("Browser.close")
            except (MechvalueError, OSError):
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            try:  # helpers of this browser (its own session) that outlived it
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            os.close(to_browser[1])
            os.close(from_browser[0])
    return [e for e in map(_event_error, cdp.events) if e]
