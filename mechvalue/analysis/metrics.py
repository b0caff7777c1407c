"""Pure metrics over score tables: control success, leakage (NLR, NGLR), diversity, bootstrap CIs.

Nothing here runs a model. Leakage follows the reconstruction in methods.md §4.4 (the
NeVA paper's exact normalisation was not recoverable): with ``delta[t, j]`` the change
in value ``j``'s score when steering toward target ``t``,

    L[t, j]   = max(0, delta[t, j])                      (j != t)
    NLR_t     = mean_{j != t} L[t, j] / max(eps, delta[t, t])
    NGLR[t,g] = weighted mean of L[t, j] over j in g (j != t) / mean_{j != t} L[t, j]
    NGLR[A,B] = mean_{t in A} mean_{j in B, j != t} L[t, j] / max(eps, delta[t, t])

Options: ``headroom`` divides L by (1 - base score of j) for scores in [0, 1];
``weights="circumplex"`` weights each term by the circular distance d(t, j).

Zero or negative target gain (the steer did not move its target): NLR's denominator is floored
at ``eps`` (> 0, default 0.01), so such a target gets the finite but large ``mean L / eps``, never
an infinity or an exception; NGLR target-to-group is NaN (undefined) where a target's total
leakage is below ``eps``. Missing scores: a NaN entry of a score table propagates (the results it
feeds are NaN); infinite entries are refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from jaxtyping import Float

from mechvalue.analysis.checks import array2d, count, fail, finite, numbers_1d, positive
from mechvalue.analysis.checks import texts as _texts
from mechvalue.core.errors import MechvalueError
from mechvalue.core.types import Numbers
from mechvalue.core.values import GROUP_SETS, VALUES, canonical, circular_distance

RESULT_COLUMNS = ("method", "target", "value", "metric", "estimate", "ci_low", "ci_high", "n")


# ------------------------------------------------------------------ statistics

def bootstrap_ci(x: Sequence[float] | np.ndarray, stat: Callable[[np.ndarray], float] = np.mean, *,
                 n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Percentile bootstrap: ``(estimate, ci_low, ci_high)`` of ``stat`` over the rows of ``x``.

    One observation gives NaN bounds. NaN observations (missing scores) go to ``stat``: with the
    default ``np.mean`` the estimate is NaN and so are both bounds (use ``np.nanmean`` to skip them);
    infinite observations are refused.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 0 or x.shape[0] == 0:
        raise MechvalueError(f"bootstrap_ci needs at least one observation: x has shape {x.shape}, expected [n, ...]")
    finite(x, "x", "bootstrap_ci", allow_nan=True)
    count(n_boot, "n_boot", "bootstrap_ci")
    if not 0 < alpha < 1:
        raise MechvalueError(f"alpha must be in (0, 1), got {alpha}")
    est = float(stat(x))
    if x.shape[0] == 1 or np.isnan(est):
        return est, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.shape[0], size=(n_boot, x.shape[0]))
    boots = np.array([stat(x[i]) for i in idx])
    lo, hi = np.nanquantile(boots, [alpha / 2, 1 - alpha / 2])
    return est, float(lo), float(hi)


def paired_difference(treated: Numbers, base: Numbers, **kwargs) -> tuple[float, float, float]:
    """Mean paired difference ``treated - base`` with a bootstrap CI (same items in the same order)."""
    t = numbers_1d(treated, "treated", "paired_difference", allow_nan=True)
    b = numbers_1d(base, "base", "paired_difference", allow_nan=True)
    if t.shape != b.shape:
        raise MechvalueError(f"paired arrays differ in shape: {t.shape} vs {b.shape}")
    return bootstrap_ci(t - b, **kwargs)


def result_row(method: str, target: str | None, value: str | None, metric: str, samples: Sequence[float] | None = None,
               *, estimate: float | None = None, ci: tuple[float, float] | None = None, seed: int = 0) -> dict:
    """One tidy result row; with ``samples`` the estimate and a bootstrap CI are computed."""
    if samples is not None:
        est, lo, hi = bootstrap_ci(samples, seed=seed)
        n = len(samples)
    else:
        est, (lo, hi), n = estimate, ci or (float("nan"), float("nan")), 1
    return {"method": method, "target": target, "value": value, "metric": metric, "estimate": est,
            "ci_low": lo, "ci_high": hi, "n": n}


def results_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """The one result shape: a DataFrame with :data:`RESULT_COLUMNS` (extra columns kept after them)."""
    df = pd.DataFrame(list(rows))
    for c in RESULT_COLUMNS:
        if c not in df:
            df[c] = np.nan
    return df[list(RESULT_COLUMNS) + [c for c in df.columns if c not in RESULT_COLUMNS]]


# ------------------------------------------------------------------ control success

def csr_labels(labels: Iterable[str | float | int | bool | None]) -> np.ndarray:
    """ConVA's scoring: yes/True/1 -> 1, no/False/0 -> 0, anything else (unparseable) -> 0.5."""
    out = []
    for lab in labels:
        if isinstance(lab, bool | int | float) and lab in (0, 1):
            out.append(float(lab))
        elif isinstance(lab, str) and lab.strip().lower().startswith("yes"):
            out.append(1.0)
        elif isinstance(lab, str) and lab.strip().lower().startswith("no"):
            out.append(0.0)
        else:
            out.append(0.5)
    return np.asarray(out)


# ------------------------------------------------------------------ leakage

def _check_delta(delta, targets: Sequence[str], values: Sequence[str], where: str) -> np.ndarray:
    """``delta`` as a finite ``[target, value]`` array matching ``targets`` and ``values``."""
    for name, names in (("targets", targets), ("values", values)):
        if isinstance(names, str):
            raise fail(where, f"{name} must be a list of value names, got the string {names!r}; wrap it as [{names!r}]")
    d = np.asarray(delta, float)
    if d.ndim != 2 or d.shape != (len(targets), len(values)):
        raise MechvalueError(f"{where}: delta must be [targets, {len(values)} values] = "
                             f"[{len(targets)}, {len(values)}], got {d.shape}")
    return array2d(d, "delta", where, allow_nan=True)


def _group_set(groups: str | dict, where: str) -> dict:
    if isinstance(groups, str) and groups not in GROUP_SETS:
        raise fail(where, f"groups={groups!r} is not one of {sorted(GROUP_SETS)} (or pass a dict of groups)")
    if not isinstance(groups, str | dict):
        raise fail(where, f"groups must be a name in {sorted(GROUP_SETS)} or a dict, got {type(groups).__name__}")
    return GROUP_SETS[groups] if isinstance(groups, str) else groups


def leakage(delta: Float[np.ndarray, "target value"], targets: Sequence[str], values: Sequence[str] = VALUES, *,
            base: Numbers | None = None, headroom: bool = False,
            weights: str | None = None) -> Float[np.ndarray, "target value"]:
    """Leakage ``L[t, j] = max(0, delta[t, j])`` off the target, 0 on it, with optional normalisations."""
    delta = _check_delta(delta, targets, values, "leakage")
    targets, values = [canonical(t) for t in targets], [canonical(v) for v in values]
    L = np.clip(delta, 0, None)
    for k, t in enumerate(targets):
        if t in values:
            L[k, values.index(t)] = 0.0
    if headroom:
        if base is None:
            raise MechvalueError("headroom normalisation needs the base scores (in [0, 1])")
        base = numbers_1d(base, "base", "leakage", allow_nan=True)
        if base.shape != (len(values),):
            raise fail("leakage", f"base has shape {base.shape}, expected [{len(values)}]: one base score per value")
        L = L / np.clip(1.0 - base, 1e-6, None)[None, :]
    if weights == "circumplex":
        L = L * np.array([[circular_distance(t, v) for v in values] for t in targets])
    elif weights is not None:
        raise MechvalueError(f"weights={weights!r}: use None or 'circumplex'")
    return L


def _target_gain(delta: np.ndarray, targets: Sequence[str], values: Sequence[str], where: str) -> np.ndarray:
    values = [canonical(v) for v in values]
    missing = [t for t in targets if canonical(t) not in values]
    if missing:
        raise fail(where, f"targets {missing} are not among the scored values {values}; a target's gain is its own "
                          "column of delta")
    return np.array([delta[k, values.index(canonical(t))] for k, t in enumerate(targets)])


def nlr(delta: Float[np.ndarray, "target value"], targets: Sequence[str], values: Sequence[str] = VALUES, *,
        eps: float = 0.01, **kw) -> np.ndarray:
    """Normalized leakage ratio per target: mean off-target leakage / max(eps, target gain).

    ``eps`` (finite, > 0) floors the gain: a target whose score did not rise (gain <= eps) gets
    ``mean L / eps``, a large finite number rather than an infinity (see the module docstring).
    """
    eps = positive(eps, "eps", "nlr")
    delta = _check_delta(delta, targets, values, "nlr")
    gain = _target_gain(delta, targets, values, "nlr")
    L = leakage(delta, targets, values, **kw)
    k = len(values) - 1
    return L.sum(1) / k / np.maximum(eps, gain)


def nglr_target_group(delta: Float[np.ndarray, "target value"], targets: Sequence[str],
                      values: Sequence[str] = VALUES, *, groups: str | dict = "HO4", eps: float = 0.01,
                      **kw) -> pd.DataFrame:
    """Target-to-group NGLR: share of target ``t``'s leakage landing in group ``g`` (1 = uniform).

    NaN where the total leakage of a target is below ``eps`` (undefined, not zero).
    """
    eps = positive(eps, "eps", "nglr_target_group")
    delta = _check_delta(delta, targets, values, "nglr_target_group")
    gs = _group_set(groups, "nglr_target_group")
    L = leakage(delta, targets, values, **kw)
    values = [canonical(v) for v in values]
    out = {}
    for g, members in gs.items():
        col = []
        for k, t in enumerate(targets):
            t = canonical(t)
            mean_all = L[k].sum() / (len(values) - 1)
            w = np.array([members.get(v, 0.0) if v != t else 0.0 for v in values])
            if mean_all < eps or w.sum() == 0:
                col.append(np.nan)
            else:
                col.append(float((w * L[k]).sum() / w.sum() / mean_all))
        out[g] = col
    return pd.DataFrame(out, index=[canonical(t) for t in targets])


def nglr_group_group(delta: Float[np.ndarray, "target value"], targets: Sequence[str],
                     values: Sequence[str] = VALUES, *, groups: str | dict = "HO4", eps: float = 0.01,
                     **kw) -> pd.DataFrame:
    """Group-to-group NGLR: mean over targets in A of mean leakage into B (j != t) per unit target gain.

    Membership weights (hedonism 0.5/0.5 in HO4) weight both the targets and the values.
    """
    eps = positive(eps, "eps", "nglr_group_group")
    delta = _check_delta(delta, targets, values, "nglr_group_group")
    gs = _group_set(groups, "nglr_group_group")
    gain = np.maximum(eps, _target_gain(delta, targets, values, "nglr_group_group"))
    L = leakage(delta, targets, values, **kw)
    values = [canonical(v) for v in values]
    targets = [canonical(t) for t in targets]
    mat = pd.DataFrame(np.nan, index=list(gs), columns=list(gs))
    for a, ma in gs.items():
        per_b = {b: [0.0, 0.0] for b in gs}
        for k, t in enumerate(targets):
            wa = ma.get(t, 0.0)
            if wa == 0:
                continue
            for b, mb in gs.items():
                w = np.array([mb.get(v, 0.0) if v != t else 0.0 for v in values])
                if w.sum() == 0:
                    continue
                per_b[b][0] += wa * float((w * L[k]).sum() / w.sum()) / gain[k]
                per_b[b][1] += wa
        for b, (num, den) in per_b.items():
            if den > 0:
                mat.loc[a, b] = num / den
    return mat


# ------------------------------------------------------------------ diversity and fluency proxies

def _ngrams(tokens: Sequence, n: int) -> list[tuple]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def _tokens(texts: Sequence[str], tokenize: Callable[[str], Sequence] | None, n: int, where: str) -> list[Sequence]:
    count(n, "n", where)
    return [tokenize(t) if tokenize else t.lower().split() for t in _texts(texts, "texts", where)]


def distinct_n(texts: Sequence[str], n: int = 2, *, per_response: bool = False,
               tokenize: Callable[[str], Sequence] | None = None) -> float:
    """Distinct-n: unique n-grams / total n-grams, over the corpus (default) or averaged per response.

    NaN (undefined) when there is no n-gram at all (no texts, empty texts, or all shorter than n words).
    """
    toks = _tokens(texts, tokenize, n, "distinct_n")
    if per_response:
        vals = [len(set(g)) / len(g) for g in (_ngrams(t, n) for t in toks) if g]
        return float(np.mean(vals)) if vals else float("nan")
    grams = [g for t in toks for g in _ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def ead_n(texts: Sequence[str], n: int = 2, *, vocab_size: int, tokenize: Callable[[str], Sequence] | None = None
          ) -> float:
    """Expectation-adjusted distinct (Liu et al. 2022): N_unique / (V (1 - ((V-1)/V)^C)).

    ``vocab_size`` is V (for n > 1 the number of possible n-grams, e.g. the distinct n-grams of
    a reference corpus); C is the total number of n-grams. NaN when there is no n-gram.
    """
    count(vocab_size, "vocab_size", "ead_n")
    grams = [g for t in _tokens(texts, tokenize, n, "ead_n") for g in _ngrams(t, n)]
    if not grams:
        return float("nan")
    c, v = len(grams), float(vocab_size)
    expected = v * (1.0 - ((v - 1.0) / v) ** c)
    return len(set(grams)) / expected


def repetition_rate(texts: Sequence[str], n: int = 3) -> float:
    """Mean share of a response's n-grams that repeat an earlier n-gram of the same response (NaN if none)."""
    vals = []
    for t in _tokens(texts, None, n, "repetition_rate"):
        grams = _ngrams(t, n)
        if grams:
            counts = Counter(grams)
            vals.append(sum(c - 1 for c in counts.values()) / len(grams))
    return float(np.mean(vals)) if vals else float("nan")
