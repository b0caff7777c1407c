"""Neuron-audit cards: the top-activating examples of a neuron or direction, tokens coloured by activation."""

from __future__ import annotations

from pathlib import Path

from mechvalue.report.tables import escape_html, format_number, read_json_file
from mechvalue.report.tokens import tokens_html

#: bookkeeping files of a step folder (the main job writes them into every step folder), never results
BOOKKEEPING = frozenset({"DONE.json", "STARTED.json"})
#: the audits step's explanation status (rendered by :func:`render_explanations`, not as a card)
EXPLANATIONS = "explanations.json"


def audit_card(audit: dict, name: str, top: int = 5) -> str:
    idx, layer = audit.get("index"), audit.get("layer")
    head = (f"<b>{escape_html(audit.get('kind', '?'))}</b>{'' if layer is None else f' layer {escape_html(layer)}'}"
            f"{'' if idx is None else f', index {escape_html(idx)}'} — {escape_html(audit.get('label') or '')}")
    examples = sorted(audit.get("examples") or [], key=lambda e: -float(e.get("max", 0.0)))[:top]
    scale = max([abs(float(a)) for e in examples for a in (e.get("acts") or [])] or [1.0])
    rows = []
    for e in examples:
        body = (tokens_html(e["tokens"], e.get("acts") or [], max_abs=scale, mark=e.get("argmax"))
                if e.get("tokens")
                else escape_html(e.get("text", "")))
        rows.append(f'<div class="ex"><span class="max">max {format_number(e.get("max"), ".2f")}</span>{body}</div>')
    return f'<div class="card"><div>{head} <span class="note">({escape_html(name)})</span></div>{"".join(rows)}</div>'


def is_audit(data) -> bool:
    """A saved neuron or direction audit (what ``mechvalue audit`` and the audits step write)."""
    return isinstance(data, dict) and isinstance(data.get("examples"), list)


def render_audits(page) -> None:
    """One card per audit JSON in ``audits/`` (the step's DONE.json / STARTED.json are bookkeeping, not audits)."""
    files = sorted(f for f in (page.run_dir / "audits").glob("*.json") if f.name not in BOOKKEEPING | {EXPLANATIONS})
    shown, skipped = 0, []

    def card(f: Path) -> None:
        nonlocal shown
        data = read_json_file(page.run_dir, f"audits/{f.name}")
        if not is_audit(data):
            skipped.append(f.name)
            return
        page.add(audit_card(data, f.name))
        shown += 1
    for f in files:
        page.guard(f"audits/{f.name}", lambda f=f: card(f))
    if not shown and not files:
        page.note("audits/*.json: not in this run.")
    if skipped:
        page.note(f"Not audits, skipped: {', '.join(skipped)}.")
    page.guard("audits/explanations.json", lambda: render_explanations(page))


def render_explanations(page) -> None:
    """The dual classes' neuron explanations and simulation scores, or why there are none."""
    status = read_json_file(page.run_dir, f"audits/{EXPLANATIONS}")
    page.add("<h3>Neuron explanations (dual classes)</h3>")
    if not status:
        page.note("audits/explanations.json: not in this run (rerun the audits step).")
        return
    if "summary" not in status:
        page.note(f"No explanations: {escape_html(status.get('why', 'unknown reason'))}.")
        return
    s = status["summary"]
    t, r, d = s.get("target", {}), s.get("random", {}), s.get("difference", {})
    page.add(f"<p>Explainer {escape_html(status.get('model'))} at {escape_html(status.get('endpoint'))}: mean "
             f"simulation score (Pearson r of predicted and real activations on held-out texts) "
             f"{format_number(t.get('mean'))} over {t.get('n_scored')} of {t.get('n')} class neurons, "
             f"{format_number(r.get('mean'))} over {r.get('n_scored')} of {r.get('n')} random neurons; difference "
             f"{format_number(d.get('estimate'))} [{format_number(d.get('ci_low'))}, "
             f"{format_number(d.get('ci_high'))}].</p>")
    from mechvalue.report.tables import read_table

    df = read_table(page.run_dir, "audits/explanations.csv")
    if df is not None and len(df):
        cols = [c for c in ("class", "layer", "index", "explanation", "score", "note", "top_example") if c in df]
        page.table(df[cols])
