"""Report section: the compliance channel (``compliance/``, :mod:`mechvalue.methods.compliance`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mechvalue.report.figure_base import fit_titles, new_figure
from mechvalue.report.tables import escape_html, format_number, read_json_file, read_table

__all__ = ["compliance_bars", "render_compliance"]

PANELS = (("follow_within", "following, within ability"), ("follow_beyond", "following, beyond ability"),
          ("refusal_classifier", "refusal rate (classifier)"), ("log_ppl", "log perplexity (fluency)"))
PART_TEXT = {"following_within_up": "instruction following within ability goes up (CI above 0)",
             "refusals_down": "refusals go down (CI below 0, by the detector that passed the hand-label audit)",
             "no_gain_beyond": "no gain beyond ability (CI reaches 0 or below)",
             "above_random": "mean delta's within-ability gain is above every random direction's"}


def compliance_bars(results: pd.DataFrame) -> Figure:
    """Paired change against no steering (bootstrap 95% CI) per arm, one panel per measure."""
    n_arms = results.loc[results.target != "base", "target"].nunique()
    fig, axes = new_figure(12.0, max(2.6, 1.4 + 0.32 * n_arms), 1, len(PANELS), grid=True)
    axes = np.ravel(axes)
    for ax, (metric, title) in zip(axes, PANELS):
        df = results[(results.metric == metric) & (results.target != "base")]
        y = np.arange(len(df))
        ax.errorbar(df.delta, y, xerr=[df.delta - df.delta_low, df.delta_high - df.delta], fmt="o", capsize=3)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(y, [f"{t} (α={a:g})" for t, a in zip(df.target, df.alpha)] if ax is axes[0] else [""] * len(df))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("change vs no steering", fontsize=8)
        ax.invert_yaxis()
    return fit_titles(fig)


def render_compliance(page) -> None:
    run_dir = page.run_dir
    verdict = read_json_file(run_dir, "compliance/verdict.json")
    if not verdict:
        page.note("compliance/: not in this run (add the compliance step).")
        return
    holds, capped = verdict.get("holds"), verdict.get("chosen_passed_mmlu_cap")
    cap = "within" if capped else "not checked against" if capped is None else "beyond"
    page.add(f"<p>Steering along the mean of the values' prompted-minus-intrinsic deltas at layer "
             f"{verdict.get('layer')} (norm {format_number(verdict.get('scale'), '.1f')} = the mean response "
             f"activation norm; α = fraction of it), chosen dose α = {verdict.get('chosen_alpha')} "
             f"({cap} the MMLU-drop cap). {verdict.get('n_instructions')} instruction prompts (bands: "
             f"{escape_html(verdict.get('bands'))}), {verdict.get('n_refusals')} requests to decline. "
             f"<b>The paper's pattern {'holds' if holds else 'does not hold' if holds is False else 'is undecided'}"
             f"</b> on this model.</p>")
    parts = verdict.get("parts", {})
    page.table(pd.DataFrame([(PART_TEXT.get(k, k), {True: "yes", False: "no", None: "n/a"}[v])
                             for k, v in parts.items()], columns=["criterion", "met"]))
    agree = verdict.get("agreement") or {}
    if agree:
        page.note(f"Refusal detectors on the {agree.get('n')} steered and unsteered responses: prefix list rate "
                  f"{format_number(agree.get('rate_a'))}, classifier rate {format_number(agree.get('rate_b'))}, "
                  f"agreement {format_number(agree.get('agreement'))}, Cohen's κ {format_number(agree.get('kappa'))};"
                  f" classifier held-out accuracy {format_number(verdict.get('classifier_test_accuracy'))}. "
                  f"Sentence counts use the {escape_html(verdict.get('punkt', ''))} Punkt model.")
    audit = verdict.get("detector_audit") or {}
    if audit:
        page.add("<h3>Refusal detectors against hand labels</h3>")
        cols = ("balanced_accuracy", "accuracy", "recall", "precision", "predicted_rate", "n", "n_refusals")
        page.table(pd.DataFrame([{"detector": k, **{c: m.get(c) for c in cols}} for k, m in audit.items()]))
        used = verdict.get("refusal_metric")
        page.note("Responses of a model to the requests, labelled by hand (data/compliance/refusal_audit.jsonl). "
                  + (f"The refusal criterion uses {used}." if used else
                     f"No detector reached balanced accuracy {verdict.get('config', {}).get('min_detector_accuracy')}"
                     f": the refusal criterion, and with it the verdict, is undecided."))
    doses = read_table(run_dir, "compliance/doses.csv")
    if doses is not None and len(doses):
        page.add("<h3>Dose sweep (MMLU)</h3>")
        page.table(doses)
    results = read_table(run_dir, "compliance/results.csv")
    if results is not None and len(results):
        page.figure("compliance_deltas", lambda: compliance_bars(results),
                    "Change against no steering, paired over the same prompts (95% bootstrap CI).")
        keep = results[results.metric.isin([m for m, _ in PANELS] + ["refusal_prefix", "follow_all"])]
        page.table(keep[["target", "alpha", "metric", "estimate", "delta", "delta_low", "delta_high", "n"]])
    bands = read_table(run_dir, "compliance/bands.csv")
    if bands is not None and len(bands):
        page.add("<h3>Instruction types by unsteered pass rate</h3>")
        page.table(bands)
