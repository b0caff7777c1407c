"""Small pure helpers the report uses to read a CI: significance, standard error and minimum detectable effect.

Every CI in a run folder is a 95% interval (percentile bootstrap). The report reads each as if it
came from a normal estimate, which is how its width turns into a standard error and a minimum
detectable effect (MDE):

- ``se  = (ci_high - ci_low) / (2 * 1.96)``;
- ``mde = (1.96 + 0.8416) * se``: the smallest true effect a two-sided test at alpha = 0.05 would
  detect with 80% power. 1.96 is the two-sided 5% critical value of the normal distribution and
  0.8416 its 80th percentile.

An effect whose |estimate| is below its MDE is *underpowered*: even if it is real, a study of this
size would miss it more than one time in five. A CI that contains 0 is *not significant*.
Non-finite inputs give NaN (undefined), never an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mechvalue.analysis.stats import mde

#: two-sided critical value of the standard normal at alpha = 0.05
Z_ALPHA = 1.96


def _finite(*xs) -> bool:
    try:
        return all(math.isfinite(float(x)) for x in xs)
    except (TypeError, ValueError):
        return False


def se_from_ci(ci_low: float, ci_high: float) -> float:
    """Standard error implied by a 95% CI: ``(ci_high - ci_low) / (2 * 1.96)`` (NaN when a bound is missing)."""
    if not _finite(ci_low, ci_high):
        return math.nan
    return (float(ci_high) - float(ci_low)) / (2 * Z_ALPHA)


def mde_from_ci(ci_low: float, ci_high: float) -> float:
    """Minimum detectable effect at 80% power, two-sided alpha 0.05: ``(1.96 + 0.8416) * se_from_ci(...)``
    (:func:`mechvalue.analysis.stats.mde`, the one formula)."""
    return mde(se_from_ci(ci_low, ci_high))


def covers_zero(ci_low: float, ci_high: float) -> bool:
    """True when the CI contains 0 (not significant); False when it excludes 0 or is undefined."""
    return _finite(ci_low, ci_high) and float(ci_low) <= 0.0 <= float(ci_high)


@dataclass(frozen=True)
class Estimate:
    """An estimate with its 95% CI and the number of items behind it (``n``; None when unknown)."""

    est: float
    lo: float = math.nan
    hi: float = math.nan
    n: int | None = None

    @property
    def defined(self) -> bool:
        return _finite(self.est)

    @property
    def has_ci(self) -> bool:
        return _finite(self.lo, self.hi)

    @property
    def mde(self) -> float:
        return mde_from_ci(self.lo, self.hi)

    @property
    def not_significant(self) -> bool:
        return covers_zero(self.lo, self.hi)

    @property
    def underpowered(self) -> bool:
        """MDE > |estimate| (False when either is undefined)."""
        return self.defined and _finite(self.mde) and self.mde > abs(float(self.est))

    @property
    def null(self) -> bool:
        """Exactly zero with a zero-width CI: every item was unchanged."""
        return self.defined and self.has_ci and float(self.est) == float(self.lo) == float(self.hi) == 0.0

    def minus(self, other: Estimate) -> Estimate:
        """``self - other`` with a CI from the two standard errors added in quadrature.

        Treats the two estimates as independent. Arms scored on the same items are usually
        positively correlated, so this CI is conservative (wider than a paired one).
        """
        d = float(self.est) - float(other.est)
        se = math.hypot(se_from_ci(self.lo, self.hi), se_from_ci(other.lo, other.hi))
        n = min(x for x in (self.n, other.n) if x is not None) if (self.n or other.n) else None
        return Estimate(d, d - Z_ALPHA * se, d + Z_ALPHA * se, n)

    def text(self, fmt: str = "+.2f", ci: bool = True) -> str:
        """``+0.34 [0.08, 0.63]``; ``–`` when undefined."""
        if not self.defined:
            return "–"
        out = format(float(self.est), fmt)
        if ci and self.has_ci:
            plain = fmt.lstrip("+")
            out += f" [{format(float(self.lo), plain)}, {format(float(self.hi), plain)}]"
        return out

    def flags(self, fmt: str = ".2f") -> list[str]:
        """``"not significant"`` (CI covers 0) and ``"underpowered (MDE x > |effect| y)"`` where they apply."""
        out = []
        if self.not_significant:
            out.append("not significant")
        if self.underpowered:
            out.append(f"underpowered (MDE {format(self.mde, fmt)} > |effect| {format(abs(float(self.est)), fmt)})")
        return out
