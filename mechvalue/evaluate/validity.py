"""Judge validity on the model's own generations (not only on Touché's human-written arguments).

The dual study generates, for the same neutral queries, responses with no system prompt (labelled neutral)
and responses under a strong value system prompt (labelled as that value). A judge that reads values off
generations should score a value's prompted responses above the neutral ones: :func:`judge_validity` gives
per value the AUC of that separation, the scores' spread, and a flag for judges that are near-constant on
generations (``std < min_std``): their judged metrics are excluded from the study's verdicts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mechvalue.core.errors import DataError
from mechvalue.core.values import canonical_list

#: a judge whose scores on generations spread less than this (std, score units 0-1) is flagged
MIN_STD = 0.05
VALIDITY_COLUMNS = ("value", "n_prompted", "n_neutral", "auc", "mean_prompted", "mean_neutral", "std", "flagged")


def judge_validity(labels: pd.DataFrame, values: Sequence[str] | None = None, *,
                   min_std: float = MIN_STD) -> pd.DataFrame:
    """Per value: AUC of the judge's score, prompted (positive) vs intrinsic (neutral) responses.

    ``labels``: the dual study's judged rows (columns ``condition`` in {intrinsic, prompted}, ``value``,
    ``score``). AUC is NaN when a side is empty or all scores tie; ``flagged`` when ``std < min_std`` over
    both sides (or no scores at all).
    """
    from sklearn.metrics import roc_auc_score

    missing = {"condition", "value", "score"} - set(labels.columns)
    if missing:
        raise DataError(f"judge_validity: labels need columns condition, value, score; missing {sorted(missing)}")
    rows = []
    for v in canonical_list(values if values is not None else sorted(set(labels["value"].dropna()))):
        sub = labels[labels["value"] == v]
        pos = sub.loc[sub["condition"] == "prompted", "score"].to_numpy(float)
        neg = sub.loc[sub["condition"] == "intrinsic", "score"].to_numpy(float)
        both = np.concatenate([pos, neg])
        std = float(both.std()) if len(both) else float("nan")
        auc = (float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], both))
               if len(pos) and len(neg) and np.ptp(both) > 0 else float("nan"))
        rows.append({"value": v, "n_prompted": len(pos), "n_neutral": len(neg), "auc": auc,
                     "mean_prompted": float(pos.mean()) if len(pos) else float("nan"),
                     "mean_neutral": float(neg.mean()) if len(neg) else float("nan"), "std": std,
                     "flagged": bool(not std >= min_std)})
    return pd.DataFrame(rows, columns=list(VALIDITY_COLUMNS))
