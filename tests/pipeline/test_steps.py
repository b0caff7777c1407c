import pandas as pd
import pytest

from mechvalue.core.errors import MechvalueError
from mechvalue.pipeline.steps import _causal_tau


def test_causal_tau_picks_the_smallest_tau_with_estimated_fdr_under_ten_percent():
    fr = pd.DataFrame({"tau": [0.01, 0.03, 0.05, 0.1], "fraction": [0.9, 0.6, 0.3, 0.05],
                       "null_fraction": [0.85, 0.4, 0.02, 0.001]})
    assert _causal_tau(fr, "fdr") == 0.05
    assert _causal_tau(fr, 0.07) == 0.07
    assert _causal_tau(fr.assign(null_fraction=1.0), "fdr") == 0.1  # none qualifies: the largest tau
    assert _causal_tau(fr.drop(columns="null_fraction"), "fdr") == 0.01
    with pytest.raises(MechvalueError, match="vl_causal_tau"):
        _causal_tau(fr, "bonferroni")
