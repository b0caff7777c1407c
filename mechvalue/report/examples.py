"""Example generations of the steering study: base and steered side by side, per target and method.

The texts come from ``steering/records.jsonl`` (one row per arm and target). The prompts come from the
records' ``queries`` when they store them; otherwise they are rebuilt from ``config.json`` with the
study's sampling rule and kept only where their count matches the generations (the page says which).
Every text is HTML-escaped.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from mechvalue.core.values import VALUES
from mechvalue.methods.registry import METHOD_NAMES
from mechvalue.methods.registry import label as method_label
from mechvalue.report.tables import escape_html, format_number


def read_records(run_dir: Path) -> list[dict]:
    """Rows of ``steering/records.jsonl`` (unreadable lines skipped; the file is never modified)."""
    path = run_dir / "steering" / "records.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "arm" in row and "target" in row:
            rows.append(row)
    return rows


def study_prompts(cfg: dict, records: list[dict]) -> tuple[dict[str, list[str]], str]:
    """``target -> prompts`` of the steering study and how they were found.

    From the records' ``queries``/``prompts`` when present; else rebuilt as the study draws them
    (``random.Random(seed + k).sample(dilemmas of the k-th value, max(n_dilemmas, n_queries))``,
    questions of the first ``n_queries``), kept only where the count matches the generations.
    """
    stored = {}
    for r in records:
        qs = r.get("queries") or r.get("prompts")
        if isinstance(qs, list) and qs:
            stored.setdefault(str(r["target"]), [str(q) for q in qs])
    if stored:
        return stored, "stored"
    conf = cfg.get("config") or {}
    study = conf.get("study") or {}
    values, seed = cfg.get("values") or conf.get("values"), cfg.get("seed", conf.get("seed"))
    nq, nd = study.get("n_queries"), study.get("n_dilemmas")
    if not values or not isinstance(seed, int) or not isinstance(nq, int) or not isinstance(nd, int):
        return {}, "unknown"
    try:
        from mechvalue.data.bundled import load_dilemmas

        out = {}
        for k, v in enumerate(values):
            pool = random.Random(seed + k).sample(load_dilemmas(v), max(nd, nq))
            out[str(v)] = [d.question for d in pool[:nq]]
    except (ValueError, KeyError, OSError, TypeError):  # a data set that changed since the run
        return {}, "unknown"
    counts = {str(r["target"]): len(r.get("texts") or []) for r in records if r.get("arm") == "base"}
    out = {t: qs for t, qs in out.items() if counts.get(t) == len(qs)}
    return out, "rebuilt"


def _target_score(row: dict, target: str, i: int) -> float:
    try:
        return float(row["judged"][i][VALUES.index(target)])
    except (KeyError, IndexError, ValueError, TypeError):
        return math.nan


def render_examples(page, cfg: dict, per_method: int = 3) -> None:
    records = read_records(page.run_dir)
    if not records:
        page.note("steering/records.jsonl: not in this run (no example generations).")
        return
    prompts, how = study_prompts(cfg, records)
    if how == "rebuilt":
        page.note("Prompts rebuilt from config.json's seed and the bundled dilemmas with the study's sampling rule "
                  "(records.jsonl does not store them).")
    elif how == "unknown":
        page.note("The prompts are not stored in records.jsonl and could not be rebuilt; shown by number.")
    by = {(str(r["arm"]), str(r["target"])): r for r in records}
    targets = list(dict.fromkeys(str(r["target"]) for r in records))
    arms = sorted({a for a, _ in by if a != "base"},
                  key=lambda m: (METHOD_NAMES.index(m) if m in METHOD_NAMES else len(METHOD_NAMES), m))
    page.add(f'<p class="note">Up to {per_method} prompts per target and method, greedy generations of the base '
             f'model and of the steered one; "score" is the judge\'s score for the target value (0–1).</p>')
    for t in targets:
        base = by.get(("base", t))
        if base is None:
            continue
        blocks = []
        for m in arms:
            row = by.get((m, t))
            if row is None:
                continue
            texts, base_texts = row.get("texts") or [], base.get("texts") or []
            same = sum(a == b for a, b in zip(texts, base_texts))
            body = "".join(
                f"<tr><td>{escape_html(prompts.get(t, [])[i] if i < len(prompts.get(t, [])) else f'prompt {i + 1}')}"
                f"</td><td>{escape_html(base_texts[i])}<div class=\"max\">score "
                f"{format_number(_target_score(base, t, i), '.2f')}</div></td><td>{escape_html(texts[i])}"
                f"<div class=\"max\">score {format_number(_target_score(row, t, i), '.2f')}</div></td></tr>"
                for i in range(min(per_method, len(texts), len(base_texts))))
            blocks.append(f"<details><summary>{escape_html(method_label(m))} ({same} of {len(texts)} generations "
                          f"identical to base)</summary><table><tr><th>prompt</th><th>base</th>"
                          f"<th>{escape_html(method_label(m))}</th></tr>{body}</table></details>")
        page.add(f"<details><summary><b>{escape_html(t)}</b>: {len(blocks)} methods</summary>"
                 f"<div style=\"margin-left:1em\">{''.join(blocks)}</div></details>")
