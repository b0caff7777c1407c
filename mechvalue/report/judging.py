"""Report section "Judges": how far the judged metrics can be trusted on this model's own generations.

Per value: the judge's AUC on a Touché23-ValueEval validation sample (``dual/judge_touche.csv``) next to its
AUC on the dual study's generations (value system prompt = that value, no system prompt = neutral;
``dual/judge_validity.csv``), the spread of its scores there, and whether it is flagged as near-constant
(and so excluded from the judged verdicts). Then how many responses the judge labelled per dual group, and
the fallback rule each group used (``dual/groups.csv``).
"""

from __future__ import annotations

import pandas as pd

from mechvalue.evaluate.validity import MIN_STD
from mechvalue.report.tables import escape_html, read_table


def _csv(page, rel: str) -> pd.DataFrame | None:
    return read_table(page.run_dir, rel)


def judge_table(validity: pd.DataFrame, touche: pd.DataFrame | None) -> pd.DataFrame:
    """One row per value: Touché AUC, generations AUC (n prompted / neutral), score std, flagged."""
    out = validity[["value", "auc", "n_prompted", "n_neutral", "mean_prompted", "mean_neutral", "std",
                    "flagged"]].rename(columns={"auc": "AUC on generations"})
    if touche is not None and {"value", "auc"} <= set(touche.columns):
        t = touche[touche["value"] != "macro"][["value", "auc"]].rename(columns={"auc": "AUC on Touché"})
        out = t.merge(out, on="value", how="right")
    out["flagged"] = out["flagged"].map(lambda f: "flagged: excluded from judged metrics" if bool(f) else "")
    return out


def render_judges(page) -> None:
    validity = _csv(page, "dual/judge_validity.csv")
    touche = _csv(page, "dual/judge_touche.csv")
    if validity is None:
        page.note("dual/judge_validity.csv: not in this run (the dual step labels the generations the judge is "
                  "validated on).")
    else:
        n_gen = int(validity["n_prompted"].sum() + validity["n_neutral"].max()) if len(validity) else 0
        src = (f" Touché: {escape_html(str(touche['source'].iloc[0]))}." if touche is not None and "source" in touche
               and len(touche) else " Touché23-ValueEval was not found, so its AUC is not shown.")
        page.add(f"<p>The judge on this model's own generations: a value's responses under a value system prompt "
                 f"(positives) against the responses to the same queries without one (neutral), {n_gen} "
                 f"generations in all. A judge whose scores spread less than std {MIN_STD} on them is flagged and "
                 f"its value left out of the judged metrics (control success, judged gain); the judge-free "
                 f"metrics are unaffected.{src}</p>")
        page.table(judge_table(validity, touche))
        flagged = validity.loc[validity["flagged"].astype(bool), "value"].tolist()
        if flagged:
            page.note(f"Flagged (near-constant on generations): {', '.join(flagged)}.")
    groups = _csv(page, "dual/groups.csv")
    if groups is not None and {"value", "condition", "rule", "n_exp", "n_unexp"} <= set(groups.columns):
        page.add("<p>Dual vectors: responses per group as the judge labelled them, and the rule used (labels: "
                 "the judge's labels split the group; score_split: above vs at-or-below the median judge score; "
                 "exp_vs_intrinsic_unexp: prompted responses labelled as the value vs unlabelled intrinsic ones; "
                 "condition: all prompted vs all intrinsic, labels unused; empty: no vector).</p>")
        page.table(groups[["value", "condition", "rule", "n_exp", "n_unexp"]])
