"""Power and significance for paired comparisons: tests, minimum detectable effects, Benjamini-Hochberg.

Every comparison of the steering study is paired: the same items (dilemmas, questionnaire items,
prompts) scored under two arms. :func:`paired_test` turns the per-item differences into one
:class:`PairedTest` (estimate, bootstrap CI, standard error, two-sided p-value of a paired t-test, and
the minimum detectable effect at 80% power); :func:`benjamini_hochberg` adjusts a family of p-values
(the study's family: every target x arm of one comparison).

Units are those of the differences (nats for dilemma preferences, questionnaire points, accuracy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from jaxtyping import Float
from scipy import stats as _sp

from mechvalue.analysis.checks import fail, numbers_1d
from mechvalue.analysis.metrics import bootstrap_ci


def mde(se: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable effect of a two-sided z test: ``(z_{1-alpha/2} + z_power) * se`` (units of ``se``)."""
    if not (0 < alpha < 1 and 0 < power < 1):
        raise fail("mde", f"alpha and power must be in (0, 1), got alpha={alpha}, power={power}")
    if not math.isfinite(se) or se < 0:
        return float("nan")
    return float((_sp.norm.ppf(1 - alpha / 2) + _sp.norm.ppf(power)) * se)


@dataclass(frozen=True)
class PairedTest:
    """One paired comparison. ``estimate``: mean difference; ``ci_low``/``ci_high``: 95% percentile bootstrap;
    ``se``: standard error of the mean; ``p``: two-sided paired t-test; ``mde``: minimum detectable effect at
    80% power (alpha 0.05); ``n``: items (NaN differences, missing scores, are dropped and not counted)."""

    estimate: float
    ci_low: float
    ci_high: float
    se: float
    p: float
    mde: float
    n: int

    def row(self) -> dict:
        return asdict(self)

    @property
    def underpowered(self) -> bool:
        """The effect is smaller than what this sample could reliably detect (or the MDE is undefined)."""
        return not math.isfinite(self.mde) or self.mde > abs(self.estimate)


NAN_TEST = PairedTest(float("nan"), float("nan"), float("nan"), float("nan"), float("nan"), float("nan"), 0)


def paired_test(diff: Float[np.ndarray, " n"] | Sequence[float], *, seed: int = 0, n_boot: int = 2000) -> PairedTest:
    """Paired comparison from per-item differences ``treated - reference`` (NaN entries skipped).

    Fewer than two finite differences give an undefined test (NaNs, ``n`` as counted). A zero spread with a
    nonzero mean gives ``p = 0``; with a zero mean ``p = 1``.
    """
    d = numbers_1d(diff, "diff", "paired_test", allow_nan=True)
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n < 2:
        est = float(d.mean()) if n else float("nan")
        return PairedTest(est, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"), n)
    est, lo, hi = bootstrap_ci(d, seed=seed, n_boot=n_boot)
    se = float(d.std(ddof=1) / math.sqrt(n))
    if se == 0:
        p = 1.0 if est == 0 else 0.0
    else:
        p = float(2 * _sp.t.sf(abs(est) / se, df=n - 1))
    return PairedTest(float(est), float(lo), float(hi), se, p, mde(se), n)


def benjamini_hochberg(p: Float[np.ndarray, " n"] | Sequence[float]) -> Float[np.ndarray, " n"]:
    """Benjamini-Hochberg adjusted p-values (same order; NaN stays NaN and is not counted in the family)."""
    p = numbers_1d(p, "p", "benjamini_hochberg", allow_nan=True) if len(p) else np.zeros(0)
    if np.any((p[np.isfinite(p)] < 0) | (p[np.isfinite(p)] > 1)):
        raise fail("benjamini_hochberg", "p-values must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    ranked = p[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    out[order] = np.clip(adj, 0, 1)
    return out
