"""Report section "Where the value prompt acts" (the ``circuits`` step; :mod:`mechvalue.pipeline.circuits`).

Per analysed value: AtP of the residual stream per layer and aligned prompt position (the prompt's tokens on
the axis), AtP per layer and head, the top neurons by |AtP| with their direct logit attribution, exact patching
of each layer's attention and MLP output, how well AtP agrees with exact patching, and the overlap of the top
AtP neurons with the other methods' neuron sets against chance.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from mechvalue.report.figure_base import new_figure
from mechvalue.report.figures import line_plot
from mechvalue.report.heatmaps import matrix_heatmap
from mechvalue.report.tables import escape_html, read_table
from mechvalue.report.tokens import tokens_html


def resid_matrix(atp: pd.DataFrame, tokens: dict) -> pd.DataFrame:
    """``[layer, position]`` normalized AtP of the residual stream; columns ``"-3 'token'"`` and ``answer``."""
    r = atp[atp["component"] == "resid_pre"]
    names = {o: f"{o} {t!r}" for o, t in zip(tokens.get("offsets", []), tokens.get("tokens", []))}
    names[0] = "answer"
    wide = r.pivot_table(index="layer", columns="position", values="normalized_effect", aggfunc="mean")
    wide.columns = [names.get(int(c), str(int(c))) for c in wide.columns]
    wide.index = [f"L{int(i)}" for i in wide.index]
    return wide


def head_matrix(atp: pd.DataFrame) -> pd.DataFrame:
    h = atp[atp["component"] == "heads"]
    wide = h.pivot_table(index="layer", columns="head", values="normalized_effect", aggfunc="mean")
    wide.index = [f"L{int(i)}" for i in wide.index]
    wide.columns = [f"H{int(c)}" for c in wide.columns]
    return wide


def top_neuron_bars(atp: pd.DataFrame, dla: pd.DataFrame | None, k: int = 20):
    neu = atp[atp["component"] == "neurons"].assign(a=lambda d: d["effect"].abs()).nlargest(k, "a")
    labels = [f"L{int(la)}.{int(n)}" for la, n in zip(neu["layer"], neu["neuron"])]
    fig, ax = new_figure(6.5, 0.6 + 0.22 * len(neu))
    y = np.arange(len(neu))
    ax.barh(y - 0.2, neu["effect"], height=0.4, label="AtP (patching effect, nats)")
    if dla is not None:
        d = dla[dla["component"] == "neurons"].set_index(["layer", "neuron"])["effect"]
        ax.barh(y + 0.2, [d.get((la, n), np.nan) for la, n in zip(neu["layer"], neu["neuron"])], height=0.4,
                label="direct logit attribution (nats)")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.axvline(0, color="grey", lw=0.8)
    ax.set(title=f"Top {len(neu)} neurons by |AtP|", xlabel="nats")
    ax.legend(fontsize="x-small")
    return fig


def render_circuits(page) -> None:
    run_dir = page.run_dir
    values = sorted(p.stem.removeprefix("tokens_") for p in (run_dir / "circuits").glob("tokens_*.json")) \
        if (run_dir / "circuits").is_dir() else []
    if not values:
        page.note("circuits/: not in this run (add the circuits step).")
        return
    for v in values:
        _render_value(page, v)


def _render_value(page, v: str) -> None:
    run_dir = page.run_dir
    tokens = json.loads((run_dir / "circuits" / f"tokens_{v}.json").read_text(encoding="utf-8"))
    atp, dla = read_table(run_dir, f"circuits/atp_{v}.csv"), read_table(run_dir, f"circuits/dla_{v}.csv")
    exact = read_table(run_dir, f"circuits/exact_{v}.csv")
    src, tgt = tokens.get("source_metric"), tokens.get("target_metric")
    gap = (f"; dilemma preference {src:+.2f} nats with the value system prompt vs {tgt:+.2f} without"
           if isinstance(src, float) and isinstance(tgt, float) else "")
    page.add(f"<h3>{escape_html(v)}</h3><p>Source: the value system prompt “"
             f"{escape_html(tokens.get('system_prompt', ''))}”; target: the model's default. "
             f"{tokens.get('n_items', '?')} dilemmas; {escape_html(tokens.get('alignment', ''))}{gap}. "
             f"Normalized effect: 1 = patching this component alone moves the target run all the way to the "
             f"source's preference, 0 = not at all.</p>")
    if atp is not None and len(atp):
        page.figure(f"circuits_resid_{v}", lambda: matrix_heatmap(
            resid_matrix(atp, tokens), title=f"{v}: AtP of the residual stream (normalized)", center=0.0,
            annotate=False, xlabel="aligned prompt position (offset from the answer)", ylabel="layer"),
            "Attribution patching of resid_pre per layer and position (prompt tokens on the axis).")
        page.figure(f"circuits_heads_{v}", lambda: matrix_heatmap(
            head_matrix(atp), title=f"{v}: AtP per attention head (normalized)", center=0.0, annotate=False,
            xlabel="head", ylabel="layer"), "Attribution patching of each head's output (hook_z).")
        page.figure(f"circuits_neurons_{v}", lambda: top_neuron_bars(atp, dla),
                    "The neurons whose patching AtP estimates largest, with their direct logit attribution.")
    if exact is not None and len(exact):
        page.figure(f"circuits_exact_{v}", lambda: line_plot(
            exact, "layer", "normalized_effect", hue="component", hlines=[0.0, 1.0],
            title=f"{v}: exact patching per layer", ylabel="normalized effect"),
            f"Exact activation patching of each layer's attention and MLP output "
            f"(n = {int(exact['n'].max())} dilemmas).")
    summary = read_table(run_dir, f"circuits/validation_summary_{v}.csv")
    if summary is not None and len(summary):
        poor = summary[summary["spearman"] < 0.5]["group"].tolist()
        page.add("<p>AtP against exact patching of the same neurons (Spearman rank correlation"
                 + (f"; <b>poor on the {', '.join(poor)} neurons: read AtP there as a hint, not a "
                    f"measurement</b>" if poor else "") + "):</p>")
        page.table(summary)
    views_path = run_dir / "circuits" / f"token_views_{v}.json"
    if views_path.exists():
        views = json.loads(views_path.read_text(encoding="utf-8"))
        parts = []
        for w in views:
            scale = max([abs(a) for a in w["source_acts"] + w["target_acts"]] + [1e-9])
            src = tokens_html(w["source_tokens"], w["source_acts"], max_abs=scale)
            tgt = tokens_html(w["target_tokens"], w["target_acts"], max_abs=scale)
            parts.append(f"<details><summary>L{w['layer']}.{w['neuron']} (AtP {w['atp']:+.3f} nats)</summary>"
                         f"<p>with the value system prompt: {src}</p><p>without: {tgt}</p></details>")
        page.add("<p>Token views of the top AtP neurons on the first dilemma (value answer; red positive, blue "
                 "negative activation, one colour scale per neuron):</p>" + "".join(parts))
    overlap = read_table(run_dir, f"circuits/overlap_{v}.csv")
    if overlap is not None and len(overlap):
        page.add("<p>Overlap of the top AtP neurons with the other methods' neurons (ratio to chance 1 = what "
                 "random neurons would share):</p>")
        page.table(overlap)
