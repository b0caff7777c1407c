"""Neuron-audit cards: the top-activating examples of a neuron or direction, tokens coloured by activation."""

from __future__ import annotations

from pathlib import Path

from mechvalue.report.tables import escape_html, format_number, read_json_file
from mechvalue.report.tokens import tokens_html

#: bookkeeping files of a step folder (the main job writes them into every step folder), never results
BOOKKEEPING = frozenset({"DONE.json", "STARTED.json"})


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
    files = sorted(f for f in (page.run_dir / "audits").glob("*.json") if f.name not in BOOKKEEPING)
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
