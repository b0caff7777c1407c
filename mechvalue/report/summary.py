"""Verdict sentences: what each steering method did, and ValueLocate's and the dual vectors' causal tests.

Each verdict is one sentence built only from the run's numbers (``steering/summary.csv`` and
``steering/results.csv``, ``valuelocate/causal.csv``, ``dual/steering.csv``). The flags follow
:mod:`mechvalue.report.stats`: "not significant" where a 95% CI covers 0, "underpowered" where the
minimum detectable effect at 80% power exceeds the effect. Differences between two arms use
:meth:`~mechvalue.report.stats.Estimate.minus` (independent errors: a conservative CI).

:func:`method_verdict`, :func:`valuelocate_verdicts` and :func:`dual_verdicts` are pure (numbers in,
text out); :func:`steering_verdicts` reads the two steering tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from mechvalue.methods.registry import METHOD_NAMES, STEERING_METHODS
from mechvalue.methods.registry import label as method_label
from mechvalue.report.figure_base import ci_columns
from mechvalue.report.stats import Estimate
from mechvalue.report.tables import DUAL_TYPES, on_target

#: the matched random control of a method (its steering arm): compared in the method's verdict
CONTROL_OF = {"neva": "random_neurons"}
#: the value system prompt: every edit is compared with it
PROMPT_ARM = "prompting"
_SPECIAL = {m.name for m in STEERING_METHODS if m.tags & {"reference", "control"}} | {"base"}


def _clause(what: str, e: Estimate, unit: str = "", items: str = "", fmt: str = "+.2f") -> str:
    """``what +0.34 [0.08, 0.63] unit (n = 6 items; not significant)``."""
    extra = ([f"n = {e.n} {items}".strip()] if e.n else []) + e.flags(fmt.lstrip("+"))
    return f"{what} {e.text(fmt)}{(' ' + unit) if unit else ''}" + (f" ({'; '.join(extra)})" if extra else "")


def _significance(e: Estimate) -> str:
    """``significant`` or ``not significant``, plus ``underpowered (...)`` where it applies."""
    flags = e.flags()
    return "; ".join(flags if e.not_significant else ["significant", *flags])


def _versus(name: str, diff: Estimate) -> str:
    if not diff.defined:
        return f"against {name}: –"
    word = "higher" if diff.est > 0 else "lower" if diff.est < 0 else "no different"
    return f"against {name}: {diff.text()} ({word}; {_significance(diff)})"


def _headline(effect: Estimate) -> str:
    if not effect.defined:
        return "effect on the target undefined (–)"
    if effect.null:
        return "no effect: every generation scored exactly as the base model's"
    if effect.not_significant:
        head = "no detectable effect on the target"
    else:
        head = "raises the target" if effect.est > 0 else "lowers the target (the wrong direction)"
    return head + (", but underpowered" if effect.underpowered else "")


def method_verdict(name: str, effect: Estimate, *, dilemma: Estimate | None = None, control: Estimate | None = None,
                   control_name: str = "matched random neurons", prompt: Estimate | None = None,
                   nlr: Estimate | None = None, ppl: Estimate | None = None, base_ppl: Estimate | None = None,
                   mmlu: Estimate | None = None, base_mmlu: Estimate | None = None, note: str = "",
                   effect_name: str = "judged target score change") -> str:
    """One sentence on one steering method (``name``: its study name; the label is looked up).

    ``effect``: the judged target-score gain over base (``effect_name`` names it); ``dilemma``: the
    judge-free dilemma preference gain (nats); ``control`` / ``prompt``: the same gain of the matched
    random control and of the value system prompt (compared as differences); ``nlr``: leakage
    (undefined when NaN or when the edit changed nothing); ``ppl``/``base_ppl`` and
    ``mmlu``/``base_mmlu``: fluency and capability; ``note``: a last clause (e.g. how often a gate
    opened).
    """
    parts = [_clause(effect_name, effect, items="generations")]
    if dilemma is not None:
        parts.append(_clause("dilemma preference", dilemma, "nats", "dilemmas"))
    if control is not None:
        parts.append(_versus(control_name, effect.minus(control)))
    if prompt is not None:
        parts.append(_versus("the value system prompt", effect.minus(prompt)))
    if nlr is not None:
        if effect.null or not nlr.defined:
            parts.append("leakage NLR – (undefined: an edit that did not raise its target has no gain to divide by)")
        else:
            parts.append(f"leakage NLR {nlr.text('.2f')}")
    if ppl is not None and ppl.defined:
        text = f"perplexity {format(ppl.est, '.2f')}"
        if base_ppl is not None and base_ppl.defined:
            d = ppl.minus(base_ppl)
            text += f" vs base {format(base_ppl.est, '.2f')} ({format(d.est, '+.2f')}; " + (
                "not significant)" if d.not_significant else "significant)")
        parts.append(text)
    if mmlu is not None and mmlu.defined:
        text = f"MMLU {format(mmlu.est, '.3f')}"
        if base_mmlu is not None and base_mmlu.defined:
            d = mmlu.minus(base_mmlu)
            text += f" vs base {format(base_mmlu.est, '.3f')} ({format(100 * d.est, '+.1f')} points" + (
                f", n = {mmlu.n} questions" if mmlu.n else "") + (
                "; not significant)" if d.not_significant else "; significant)")
        parts.append(text)
    else:
        parts.append("MMLU not measured in this run")
    if note:
        parts.append(note)
    return f"{method_label(name)}: {_headline(effect)}; " + "; ".join(parts) + "."


# ------------------------------------------------------------------ reading the steering tables

def with_undefined_nlr(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with NLR (and its CI) set to NaN where the arm left its target unchanged: judged gain
    exactly 0 with a zero-width CI (older runs wrote 0 there; leakage of an edit that did nothing is undefined)."""
    if "nlr" not in summary or "judged_gain" not in summary:
        return summary
    lo, hi = ci_columns(summary, "judged_gain")
    out = summary.copy()
    for i, (_, row) in enumerate(summary.iterrows()):
        e = Estimate(*pd.to_numeric(pd.Series([row["judged_gain"], row[lo] if lo else math.nan,
                                               row[hi] if hi else math.nan]), errors="coerce").astype(float))
        if e.null and str(row["method"]) != "base":
            cols = [c for c in ("nlr", *ci_columns(summary, "nlr")) if c]
            out.iloc[i, [out.columns.get_loc(c) for c in cols]] = math.nan
    return out


def _n_lookup(results: pd.DataFrame | None) -> dict[tuple[str, str], int]:
    if results is None or not {"method", "metric", "n"} <= set(results.columns):
        return {}
    pooled = results[results["target"].astype(str) == "all"] if "target" in results else results
    n = pd.to_numeric(pooled["n"], errors="coerce")
    return {(str(m), str(k)): int(x) for m, k, x in zip(pooled["method"], pooled["metric"], n) if x == x}


def summary_estimates(summary: pd.DataFrame, results: pd.DataFrame | None = None) -> dict[str, dict[str, Estimate]]:
    """``method -> metric -> Estimate`` from a wide summary (CI columns per :func:`ci_columns`), n from results."""
    ns = _n_lookup(results)
    out: dict[str, dict[str, Estimate]] = {}
    for _, row in summary.iterrows():
        m = str(row["method"])
        out[m] = {}
        for metric in summary.columns:
            if metric == "method" or metric.endswith(("_ci_low", "_ci_high")) or metric.startswith(("cs_", "ppl_")):
                continue
            lo, hi = ci_columns(summary, metric)
            num = pd.to_numeric(pd.Series([row[metric], row[lo] if lo else math.nan, row[hi] if hi else math.nan]),
                                errors="coerce")
            out[m][metric] = Estimate(*map(float, num), ns.get((m, metric)))
    return out


def gate_note(gate_rates: pd.DataFrame | None) -> str:
    """How often ConVA's relevance gate opened on the study's prompts (``steering/gate_rates.csv``)."""
    if gate_rates is None or not {"target", "gate_rate_prompts"} <= set(gate_rates.columns):
        return ""
    rates = pd.to_numeric(gate_rates["gate_rate_prompts"], errors="coerce")
    per = ", ".join(f"{t} {r:.0%}" for t, r in zip(gate_rates["target"], rates) if r == r)
    return f"its gate opened on {rates.mean():.0%} of the prompts ({per})" if per else ""


def steering_verdicts(summary: pd.DataFrame, results: pd.DataFrame | None = None,
                      notes: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """``(method, sentence)`` for every arm of the summary except base, in the registry's order
    (``notes``: an extra clause per method, e.g. ``{"conva": gate_note(...)}``)."""
    est = summary_estimates(summary, results)
    nan = Estimate(math.nan)
    base = est.get("base", {})
    order = sorted(est, key=lambda m: (METHOD_NAMES.index(m) if m in METHOD_NAMES else len(METHOD_NAMES), m))
    out = []
    for m in order:
        if m == "base":
            continue
        e = est[m]
        effect = e.get("judged_gain", e.get("control_success", nan))
        metric = "judged_gain" if "judged_gain" in e else "control_success"
        ctrl = CONTROL_OF.get(m)
        out.append((m, method_verdict(
            m, effect, dilemma=e.get("dilemma_gain"),
            control=est[ctrl].get(metric) if ctrl in est else None, control_name=method_label(ctrl or ""),
            prompt=est[PROMPT_ARM].get(metric) if PROMPT_ARM in est and m not in _SPECIAL else None,
            nlr=e.get("nlr", nan), ppl=e.get("perplexity"), base_ppl=base.get("perplexity"),
            mmlu=e.get("mmlu"), base_mmlu=base.get("mmlu"), note=(notes or {}).get(m, ""),
            effect_name="judged target score change" if metric == "judged_gain" else "control success")))
    return out


# ------------------------------------------------------------------ causal tests

def _row_estimate(rows: pd.DataFrame) -> Estimate:
    """Mean estimate; CI = the envelope of the rows' CIs (several random draws: conservative)."""
    if rows.empty:
        return Estimate(math.nan)
    num = rows[["estimate", "ci_low", "ci_high"]].apply(pd.to_numeric, errors="coerce")
    n = pd.to_numeric(rows["n"], errors="coerce").min() if "n" in rows else math.nan
    return Estimate(float(num["estimate"].mean()), float(num["ci_low"].min()), float(num["ci_high"].max()),
                    int(n) if n == n else None)


def metric_name(metric: str) -> str:
    """A readable name of a causal-test metric (``delta_questionnaire`` -> ``questionnaire score``)."""
    return {"delta_questionnaire": "questionnaire score", "delta_dilemma_pref": "dilemma preference"}.get(
        metric, metric.removeprefix("delta_").replace("_", " "))


def _beats(diff: Estimate) -> bool:
    return diff.defined and diff.est > 0 and not diff.not_significant


def valuelocate_verdicts(causal: pd.DataFrame) -> list[str]:
    """One sentence per target dimension (located vs matched random neurons, largest factor) and an overall count."""
    df = on_target(causal)
    out, wins, total = [], 0, 0
    for target, sub in df.groupby("target", sort=False):
        if "factor" in sub:
            sub = sub[sub["factor"] == sub["factor"].max()]
        loc = sub[sub["method"] == "valuelocate"]
        if loc.empty:
            continue
        info = []
        if "n_neurons" in loc and loc["n_neurons"].notna().any():
            info.append(f"{int(loc['n_neurons'].iloc[0])} neurons")
        if "factor" in loc:
            info.append(f"×{float(loc['factor'].iloc[0]):g}")
        if "tau" in loc and pd.notna(loc["tau"].iloc[0]):
            info.append(f"τ = {float(loc['tau'].iloc[0]):g}")
        clauses = []
        for metric, g in loc.groupby("metric", sort=False):
            located = _row_estimate(g)
            rnd = _row_estimate(sub[(sub["method"] == "random_neurons") & (sub["metric"] == metric)])
            unit = " nats" if "dilemma" in str(metric) else ""
            text = f"{metric_name(str(metric))} {located.text()}{unit}"
            if rnd.defined:
                diff = located.minus(rnd)
                total += 1
                wins += _beats(diff)
                verdict = ("beats random" if _beats(diff) else "worse than random" if diff.est < 0 and
                           not diff.not_significant else "no better than random")
                text += f" vs matched random neurons {rnd.text()} ({verdict}: difference {diff.text()})"
            clauses.append(text)
        out.append(f"ValueLocate, {target} ({', '.join(info)}): " + "; ".join(clauses) + ".")
    if total:
        word = "supports" if wins == total else "partly supports" if wins else "does not support"
        out.append(f"Causal verdict: the located neurons beat matched random neurons on {wins} of {total} "
                   f"comparisons (a win: a higher shift with a CI of the difference above 0); this run {word} "
                   f"the claim that they carry the value.")
    return out


def dual_verdicts(steering: pd.DataFrame, structure: Mapping | None = None) -> list[str]:
    """Vector types (and neuron classes) against their random controls, on the primary metric, per target."""
    df = on_target(steering)
    metrics = list(dict.fromkeys(df["metric"].astype(str)))
    metric = "delta_questionnaire" if "delta_questionnaire" in metrics else (metrics[0] if metrics else None)
    if metric is None:
        return []
    df = df[df["metric"].astype(str) == metric]
    arm = df["arm"].astype(str) if "arm" in df else pd.Series("", index=df.index)
    out = []
    for target, sub in df.groupby("target", sort=False):
        a = arm[sub.index]
        vt = sub["vector_type"].astype(str) if "vector_type" in sub else pd.Series("", index=sub.index)
        rnd = sub[a == "random_direction_pooled"]
        rnd = _row_estimate(rnd if len(rnd) else sub[vt == "random"])
        alpha = sub["alpha"].dropna().iloc[0] if "alpha" in sub and sub["alpha"].notna().any() else None
        parts, wins, tested = [], 0, 0
        for t in DUAL_TYPES:
            e = _row_estimate(sub[vt == t])
            if not e.defined:
                continue
            tested += 1
            if rnd.defined:
                wins += _beats(e.minus(rnd))
            parts.append(f"{t} {e.text()}")
        if not parts:
            continue
        text = (f"Dual vectors, {target}{f' (α = {float(alpha):g})' if alpha is not None else ''}: "
                f"{metric_name(metric)} change " + ", ".join(parts))
        if rnd.defined:
            text += (f" vs a random direction of the same norm {rnd.text()}; {wins} of {tested} vector types beat it")
        if "neuron_class" in sub:
            cls = sub[sub["neuron_class"].notna() & (a == "neurons")]
            ctl = sub[sub["neuron_class"].notna() & a.str.startswith("random_neurons")]
            if "beta" in cls and cls["beta"].notna().any():
                cls = cls[cls["beta"] == cls["beta"].max()]
            bits = []
            for c, g in cls.groupby("neuron_class", sort=False):
                e = _row_estimate(g)
                r = _row_estimate(ctl[ctl["neuron_class"].astype(str).isin([f"random:{c}", "random"])])
                verdict = ("beats" if _beats(e.minus(r)) else "does not beat") if r.defined else ""
                bits.append(f"{c} {e.text()}" + (f" ({verdict} random {r.text()})" if verdict else ""))
            if bits:
                text += "; scaling neuron classes: " + ", ".join(bits)
        out.append(text + ".")
    return out
