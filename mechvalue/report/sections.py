"""Report sections that help a reader act on a run: the run header with wall time, summary and sample sizes.

Each ``render_*`` function takes the report page (:class:`mechvalue.report.html`'s page object, with
``add``, ``note``, ``table``, ``guard`` and ``run_dir``) and appends its HTML. Numbers come only from
the run folder. The glossary lives in :mod:`.glossary`, the example generations in :mod:`.examples`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from mechvalue.methods.registry import METHOD_NAMES
from mechvalue.methods.registry import label as method_label
from mechvalue.report.adjusted import adjusted_verdicts
from mechvalue.report.examples import read_records
from mechvalue.report.stats import mde_from_ci
from mechvalue.report.summary import (
    dual_verdicts,
    gate_note,
    metric_name,
    steering_verdicts,
    valuelocate_verdicts,
)
from mechvalue.report.tables import EmptyTable, escape_html, read_json_file, read_table

#: the order of the main job's steps (unknown steps follow, alphabetically)
STEP_ORDER = ("judge", "valuelocate", "conva", "neva", "dual", "steering", "circuits", "audits", "report")


def duration(seconds: float) -> str:
    s = int(round(float(seconds)))
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60} s" if s < 3600 else f"{s // 3600} h {s % 3600 // 60} min"


def _table_or_none(run_dir: Path, *rels: str) -> pd.DataFrame | None:
    for rel in rels:
        try:
            df = read_table(run_dir, rel)
        except EmptyTable:
            df = None
        if df is not None:
            return df
    return None


# ------------------------------------------------------------------ wall time

def step_seconds(run_dir: Path, cfg: dict) -> tuple[dict[str, float], str]:
    """``step -> seconds`` and where they came from: config.json's ``wall_seconds_per_step`` (or its
    ``steps``), else each ``<step>/DONE.json``'s ``seconds``."""
    per = cfg.get("wall_seconds_per_step")
    source = "config.json"
    if not isinstance(per, dict) or not per:
        per = {s: r.get("seconds") for s, r in (cfg.get("steps") or {}).items() if isinstance(r, dict)} \
            if isinstance(cfg.get("steps"), dict) else {}
    if not any(isinstance(v, int | float) for v in per.values()):
        per, source = {}, "each step's DONE.json"
        for done in sorted(run_dir.glob("*/DONE.json")):
            try:
                rec = json.loads(done.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(rec, dict) and isinstance(rec.get("seconds"), int | float):
                per[done.parent.name] = rec["seconds"]
    per = {s: float(v) for s, v in per.items() if isinstance(v, int | float) and math.isfinite(v)}
    order = sorted(per, key=lambda s: (STEP_ORDER.index(s) if s in STEP_ORDER else len(STEP_ORDER), s))
    return {s: per[s] for s in order}, source


def render_wall_time(page, cfg: dict) -> None:
    per, source = step_seconds(page.run_dir, cfg)
    if not per:
        page.note("Wall time per step: no step recorded its duration.")
        return
    rows = [(s, duration(v), f"{v:.1f}") for s, v in per.items()]
    rows.append(("total", duration(sum(per.values())), f"{sum(per.values()):.1f}"))
    page.add(f"<p>Wall time per step (from {escape_html(source)}):</p>")
    page.table(pd.DataFrame(rows, columns=["step", "wall time", "seconds"]))


def render_run(page) -> dict:
    """The run's settings (model, seed, values, wall time, config, versions); returns config.json's content."""
    cfg = read_json_file(page.run_dir, "config.json")
    if cfg is None:
        page.note("config.json: not in this run.")
        return {}
    model = cfg.get("model") or {}
    per, _ = step_seconds(page.run_dir, cfg)
    wall = sum(per.values()) if per else cfg.get("wall_seconds")
    rows = [("model", model.get("model_id", "?")), ("weight processing", model.get("processing", "?")),
            ("command", cfg.get("command", "?")), ("seed", cfg.get("seed", "?")), ("quick", cfg.get("quick", "?")),
            ("values", ", ".join(map(str, cfg.get("values") or []))), ("started", cfg.get("started", "?")),
            ("wall time (all steps)", duration(wall) if isinstance(wall, int | float) else "not recorded")]
    last = cfg.get("wall_seconds_last_invocation")
    if isinstance(last, int | float):
        rows.append(("wall time (last invocation)", duration(last)))
    rows += [(f"model.{k}", v) for k, v in model.items() if k not in ("model_id", "processing")]
    page.table(pd.DataFrame(rows, columns=["setting", "value"]).astype(str))
    render_wall_time(page, cfg)
    for key, title in (("config", "run configuration"), ("versions", "package versions")):
        if isinstance(cfg.get(key), dict) and cfg[key]:
            items = [(k, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in sorted(cfg[key].items())]
            page.add(f"<details><summary>{title}</summary>")
            page.table(pd.DataFrame(items, columns=["key", "value"]))
            page.add("</details>")
    return cfg


def methods_doc_link(run_dir: Path) -> str:
    """A link to the project's ``docs/methods.md`` (relative to the run folder), or its name when not found."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "methods.md"
    name = "docs/methods.md"
    if doc.is_file():
        try:
            rel = Path(os.path.relpath(doc, Path(run_dir).resolve())).as_posix()
            return f'<a href="{escape_html(rel)}">{name}</a>'
        except ValueError:  # another drive
            pass
    return f"{name} (in the mechvalue source tree)"


# ------------------------------------------------------------------ summary

def render_summary(page) -> None:
    run_dir = page.run_dir
    summary = _table_or_none(run_dir, "steering/summary.csv")
    items = []
    if summary is not None and "method" in summary:
        results = _table_or_none(run_dir, "steering/results.csv", "results.csv")
        notes = {"conva": gate_note(_table_or_none(run_dir, "steering/gate_rates.csv"))}
        items += steering_verdicts(summary, results, notes)
    else:
        page.note("steering/summary.csv: not in this run (no steering verdicts).")
    if items:
        page.add("<p>Per steering method, against the unedited model on the same prompts (judged gain, "
                 "95% CI):</p><ul>" + "".join(f"<li><b>{escape_html(method_label(m))}</b>"
                                               f"{escape_html(s[len(method_label(m)):])}</li>" for m, s in items)
                 + "</ul>")
    tests = _table_or_none(run_dir, "steering/tests.csv")
    if tests is not None:
        adjusted = adjusted_verdicts(tests)
        if adjusted:
            page.add("<p>Judge-free, on held-out items (dilemmas and portrait items never used to fit a vector or "
                     "select a neuron), paired per item; p-values Benjamini-Hochberg adjusted over targets × arms "
                     "for each comparison and metric, and the verdict word comes from the adjusted result:</p><ul>"
                     + "".join(f"<li><b>{escape_html(method_label(m))}</b>{escape_html(s[len(method_label(m)):])}"
                               f"</li>" for m, s in adjusted) + "</ul>")
    causal = _table_or_none(run_dir, "valuelocate/causal.csv")
    if causal is not None and {"method", "target", "metric", "estimate"} <= set(causal.columns):
        page.add("<ul>" + "".join(f"<li>{escape_html(s)}</li>" for s in valuelocate_verdicts(causal)) + "</ul>")
    dual = _table_or_none(run_dir, "dual/steering.csv")
    if dual is not None and {"target", "metric", "estimate"} <= set(dual.columns):
        lines = dual_verdicts(dual, read_json_file(run_dir, "dual/structure.json"))
        if lines:
            page.add("<ul>" + "".join(f"<li>{escape_html(s)}</li>" for s in lines) + "</ul>")
    if summary is not None and {"method", "mmlu"} <= set(summary.columns):
        base = summary[summary["method"] == "base"]
        if len(base) and pd.notna(base["mmlu"].iloc[0]):
            lo = base["mmlu_ci_low"].iloc[0] if "mmlu_ci_low" in base else math.nan
            hi = base["mmlu_ci_high"].iloc[0] if "mmlu_ci_high" in base else math.nan
            at_chance = pd.notna(lo) and pd.notna(hi) and lo <= 0.25 <= hi or float(base["mmlu"].iloc[0]) <= 0.25
            if at_chance:
                page.add(f'<p class="note">MMLU: the base model scores {float(base["mmlu"].iloc[0]):.3f} '
                         f"[{lo:.3f}, {hi:.3f}], at or below chance (0.25 for four options), so an MMLU drop "
                         f"cannot show a capability cost on this model; read the MMLU columns as a check that "
                         f"nothing broke, not as capability.</p>")
    page.add('<p class="note">"Not significant": the 95% CI covers 0. "Underpowered": the minimum detectable '
             'effect at 80% power (see <a href="#samples">sample sizes</a>) exceeds the effect, so a real effect '
             'of that size would often be missed. Differences between two arms add their standard errors '
             '(a conservative CI). Metrics: <a href="#glossary">glossary</a>.</p>')


# ------------------------------------------------------------------ sample sizes

def render_samples(page, cfg: dict) -> None:
    run_dir = page.run_dir
    page.add('<p class="note">MDE: minimum detectable effect at 80% power, two-sided α = 0.05, from each 95% CI: '
             'se = (ci_high − ci_low) / (2 · 1.96), MDE = (1.96 + 0.8416) · se, in the metric\'s unit. '
             'An effect below its MDE is underpowered.</p>')
    res = _table_or_none(run_dir, "steering/results.csv", "results.csv")
    records = read_records(run_dir)
    rows = []
    if records:
        targets = list(dict.fromkeys(r.get("target") for r in records))
        arms = list(dict.fromkeys(r.get("arm") for r in records))
        first = next((r for r in records if r.get("arm") == "base"), records[0])
        per_t = len(first.get("texts") or [])
        rows += [("steering", "target values", len(targets), ", ".join(map(str, targets))),
                 ("steering", "arms (methods)", len(arms), ", ".join(map(str, arms))),
                 ("steering", "prompts per target", per_t, "value-relevant dilemma questions"),
                 ("steering", "generations per arm", per_t * len(targets), "prompts × targets, greedy"),
                 ("steering", "dilemmas per target", len(first.get("dilemma_pref") or []),
                  "judge-free preference, every arm (held out: never used for fitting)"),
                 ("steering", "portrait items per target", len(first.get("portrait_score") or []) or "not scored",
                  "judge-free questionnaire rating, every arm"),
                 ("steering", "MMLU questions per arm", sum(len(r.get("mmlu") or []) for r in records
                                                           if r.get("arm") == first.get("arm")) or "not measured",
                  "pooled over targets"),
                 ("steering", "random controls (judged)", len(targets) if "random_neurons" in arms else 0,
                  "one matched random neuron set per target (random_neurons arm), judged generations")]
        tests = _table_or_none(run_dir, "steering/tests.csv")
        if tests is not None and "n_controls" in tests:
            rnd = tests[(tests["comparison"] == "random") & (tests["target"].astype(str) == "all")]
            for m, k in rnd.groupby("method")["n_controls"].max().items():
                rows.append(("steering", f"random controls of {method_label(m)}", int(k),
                             "distinct draws per target, judge-free; each item meets one draw"))
    causal = _table_or_none(run_dir, "valuelocate/causal.csv")
    if causal is not None and "arm" in causal:
        n_rand = causal.loc[causal["method"] == "random_neurons", "arm"].nunique()
        n_items = causal.groupby("metric")["n"].max() if "n" in causal else pd.Series(dtype=float)
        rows += [("valuelocate causal", f"{metric_name(m)}: items per target", int(v), "paired with no edit")
                 for m, v in n_items.items()]
        rows.append(("valuelocate causal", "random neuron sets per target", int(n_rand), "same per-layer counts"))
    dual = _table_or_none(run_dir, "dual/steering.csv")
    if dual is not None and "n" in dual:
        for m, v in dual.groupby("metric")["n"].max().items():
            rows.append(("dual steering", f"{metric_name(m)}: items per target", int(v), "paired with no edit"))
        if "arm" in dual:
            n_dir = dual.loc[dual["arm"].astype(str) == "random_direction", "seed"].nunique() \
                if "seed" in dual else 0
            rows.append(("dual steering", "random directions", int(n_dir), "same norm as the prompted vector"))
    if rows:
        page.table(pd.DataFrame(rows, columns=["table", "what", "n", "note"]).astype({"n": str}))
    else:
        page.note("No sample sizes: the run has no steering records, causal test or dual steering table.")
    if res is not None and {"method", "metric", "n", "ci_low", "ci_high"} <= set(res.columns):
        pooled = res[res["target"].astype(str) == "all"] if "target" in res else res
        if len(pooled):
            page.add("<p>n and MDE of each pooled steering metric (rows: metric; MDE per method):</p>")
            page.table(_mde_table(pooled))
    tests = _table_or_none(run_dir, "steering/tests.csv")
    if tests is not None and {"p", "p_adj", "mde"} <= set(tests.columns):
        pooled = tests[tests["target"].astype(str) == "all"].copy()
        pooled["method"] = pooled["method"].map(method_label)
        page.add("<p>Paired tests of the steering study, all targets pooled (estimate and 95% bootstrap CI of the "
                 "per-item difference; p: paired t-test; p_adj: Benjamini-Hochberg within each comparison and "
                 "metric; the per-target rows are in steering/tests.csv):</p>")
        page.table(pooled[["method", "metric", "comparison", "estimate", "ci_low", "ci_high", "n", "mde", "p",
                           "p_adj", "n_controls"]])
    for rel, title in (("valuelocate/causal.csv", "ValueLocate causal test"), ("dual/steering.csv", "dual steering")):
        df = causal if rel.startswith("valuelocate") else dual
        if df is not None and {"metric", "ci_low", "ci_high"} <= set(df.columns):
            df = df[df["value"].astype(str) == df["target"].astype(str)] if {"value", "target"} <= set(df) else df
            if "vector_type" in df:  # dual: vector types, neuron classes and their random controls
                arm = df["vector_type"].where(df["vector_type"].notna(), df.get("neuron_class"))
                df = df.assign(arm=arm.fillna(df.get("arm")))
            key = "arm" if "vector_type" in df else "method"
            page.add(f"<p>{escape_html(title)}: n and MDE per arm and metric (on-target rows, mean over targets "
                     f"and random draws):</p>")
            page.table(_mde_table(df.assign(metric=df["metric"].map(metric_name)), key))


def _mde_table(df: pd.DataFrame, key: str = "method") -> pd.DataFrame:
    df = df.assign(mde=[mde_from_ci(lo, hi) for lo, hi in zip(pd.to_numeric(df["ci_low"], errors="coerce"),
                                                             pd.to_numeric(df["ci_high"], errors="coerce"))])
    n = df.groupby("metric", sort=False)["n"].max() if "n" in df else None
    wide = df.pivot_table(index="metric", columns=key, values="mde", aggfunc="mean", sort=False)
    cols = sorted(wide.columns, key=lambda m: (METHOD_NAMES.index(m) if m in METHOD_NAMES else len(METHOD_NAMES),
                                               str(m)))
    wide = wide[cols]
    wide.columns = [f"MDE {c}" for c in cols]
    out = wide.reset_index()
    if n is not None:
        out.insert(1, "n", [str(int(n[m])) if pd.notna(n.get(m)) else "–" for m in out["metric"]])
    return out
