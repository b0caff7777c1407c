"""Matched random controls, and "is this edit better than random?" in one call.

:func:`random_like` turns any edit into a control of the same shape and size:

- a :class:`~mechvalue.analysis.neurons.NeuronSet` -> random neurons with the same per-layer counts;
- neuron specs (:class:`ScaleNeurons`, :class:`AblateNeurons`, :class:`SetNeurons`) -> the
  same edit on as many random neurons of the same layer (per-index factors/values kept);
- :class:`AddVector` -> a Gaussian direction with the same norm (per-row alphas and gates kept);
- :class:`ProjectOut` -> a random direction;
- :class:`PerBatch` (e.g. ConVA's closed-form push) -> the same per-batch build, each of its
  vectors replaced by a same-norm random direction (so the per-row push sizes are kept);
- a list of any of these -> each element, with one seed stream.

:func:`versus_random` scores the edit, ``n_controls`` random controls and no edit on the same
items, and returns tidy rows (paired differences with bootstrap CIs) plus the verdict
``steered - mean(controls)`` with its CI: the edit beats random when ``ci_low > 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from mechvalue.analysis.metrics import paired_difference, results_frame
from mechvalue.analysis.neurons import NeuronSet, matched_random
from mechvalue.analysis.vectors import random_directions
from mechvalue.core.errors import MechvalueError
from mechvalue.interventions.install import AddVector, NeuronSpec, PerBatch, ProjectOut

Scorer = Callable[[object, object], np.ndarray]


def _random_indices(layer: int, k: int, d_mlp: int, g: torch.Generator, exclude: Sequence[int] = ()) -> torch.Tensor:
    banned = set(int(i) for i in exclude)
    pool = torch.tensor([i for i in range(d_mlp) if i not in banned])
    if len(pool) < k:
        raise MechvalueError(f"layer {layer}: cannot draw {k} random neurons from {len(pool)}")
    return pool[torch.randperm(len(pool), generator=g)[:k]].sort().values


def random_like(edit, *, seed: int = 0, d_mlp: int | None = None, model=None):
    """A matched random control of ``edit`` (see the module docstring). Deterministic in ``seed``.

    ``d_mlp`` (or ``model``) is needed for neuron edits; neurons of the original are excluded.
    """
    if d_mlp is None and model is not None:
        d_mlp = model.cfg.d_mlp
    g = torch.Generator().manual_seed(seed)
    return _random_like(edit, g, seed, d_mlp)


def _random_like(edit, g: torch.Generator, seed: int, d_mlp: int | None):
    if isinstance(edit, (list, tuple)):
        return [_random_like(e, g, seed * 7919 + k, d_mlp) for k, e in enumerate(edit)]
    if isinstance(edit, NeuronSet):
        if d_mlp is None:
            raise MechvalueError("random_like(NeuronSet) needs d_mlp= or model=")
        return matched_random(edit, d_mlp, seed=seed, exclude=edit)
    if isinstance(edit, NeuronSpec):
        if d_mlp is None:
            raise MechvalueError(f"random_like({type(edit).__name__}) needs d_mlp= or model=")
        idx = torch.as_tensor(edit.indices, dtype=torch.long).reshape(-1)
        return edit.replace(indices=_random_indices(edit.layer, len(idx), d_mlp, g, idx.tolist()))
    if isinstance(edit, AddVector):
        seed_k = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
        return edit.replace(vector=random_directions(edit.vector, 1, seed=seed_k)[0])
    if isinstance(edit, ProjectOut):
        seed_k = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
        return edit.replace(direction=random_directions(edit.direction, 1, seed=seed_k)[0])
    if isinstance(edit, PerBatch):
        def build(model, examples, edit=edit):
            return random_like(edit.build(model, examples), seed=seed, model=model)
        return PerBatch(build, name=f"random[{edit.name}]#{seed}")
    raise MechvalueError(f"no matched random control for {type(edit).__name__}; pass controls= explicitly")


def versus_random(model, edit, scorer: Scorer, *, n_controls: int = 5, seed: int = 0, controls=None,
                  base: np.ndarray | None = None, method: str = "steered", target: str | None = None,
                  value: str | None = None, metric: str = "score") -> pd.DataFrame:
    """Effect of ``edit`` vs no edit and vs ``n_controls`` matched random controls, on the same items.

    Args:
        edit: an intervention: a spec, a list of specs or a :class:`PerBatch` (for a
            :class:`NeuronSet`, pass the specs that edit it, e.g. ``manipulation_specs``).
        scorer: ``scorer(model, interventions) -> [n_items]`` per-item scores (the same items in
            the same order on every call), e.g. ``lambda m, s: dilemma_preference(m, ds, s).pref.to_numpy()``.
        controls: explicit control interventions (default: ``random_like(edit, seed=seed + k)``).
        base: the unsteered scores if already computed.

    Returns:
        tidy rows (method, target, value, metric, estimate, ci_low, ci_high, n, arm):
        ``arm="steered"``: steered - base; ``"random#k"``: control k - base; ``"random_mean"``:
        mean over controls - base; ``"steered_vs_random"``: steered - mean of controls with a
        CI bootstrapped over items and controls, ``p_rank`` (share of controls at least as
        large, add-one smoothed), ``random_upper`` (the 95% prediction bound of one more
        control's effect) and ``beats_random``: the CI excludes 0 AND the steered effect lies
        above that bound (beating the average random edit is not enough: a random edit of
        the same size must also be unlikely to do as well).
    """
    if n_controls < 1 and controls is None:
        raise MechvalueError(f"n_controls must be >= 1, got {n_controls}")
    if controls is None:
        controls = [random_like(edit, seed=seed + k, model=model) for k in range(n_controls)]
    base = np.asarray(scorer(model, ()) if base is None else base, dtype=float)
    steered = np.asarray(scorer(model, edit), dtype=float)
    if steered.shape != base.shape or base.ndim != 1 or base.size == 0:
        raise MechvalueError(f"scorer must return the same non-empty [n_items] array each call; got {base.shape} "
                             f"and {steered.shape}")
    ctrl = np.stack([np.asarray(scorer(model, c), dtype=float) for c in controls])
    keys = {"method": method, "target": target, "value": value, "metric": metric}
    rows = []

    def add(arm: str, a: np.ndarray, b: np.ndarray, **extra) -> None:
        est, lo, hi = paired_difference(a, b, seed=seed)
        rows.append({**keys, "estimate": est, "ci_low": lo, "ci_high": hi, "n": len(a), "arm": arm, **extra})

    add("steered", steered, base)
    for k, c in enumerate(ctrl):
        add(f"random#{k}", c, base)
    add("random_mean", ctrl.mean(0), base)
    est, lo, hi = _two_level_ci(steered, ctrl, seed=seed)
    effects = ctrl.mean(1) - base.mean()  # [control]
    s_eff = steered.mean() - base.mean()
    p_rank = (1 + int((effects >= s_eff).sum())) / (1 + len(effects))
    bound = _prediction_bound(effects)
    rows.append({**keys, "estimate": est, "ci_low": lo, "ci_high": hi, "n": len(steered), "arm": "steered_vs_random",
                 "n_controls": len(ctrl), "p_rank": p_rank, "random_upper": bound,
                 "beats_random": bool(lo > 0 and s_eff > bound)})
    return results_frame(rows)


def _prediction_bound(effects: np.ndarray, alpha: float = 0.05) -> float:
    """Upper ``1 - alpha/2`` prediction bound for one more random control's effect (Student t)."""
    from scipy.stats import t

    k = len(effects)
    if k < 2:
        return float(effects.max())
    return float(effects.mean() + t.ppf(1 - alpha / 2, k - 1) * effects.std(ddof=1) * np.sqrt(1 + 1 / k))


def _two_level_ci(steered: np.ndarray, ctrl: np.ndarray, *, n_boot: int = 2000, alpha: float = 0.05,
                  seed: int = 0) -> tuple[float, float, float]:
    """``mean(steered) - mean(controls)`` with a bootstrap over items AND over controls.

    Resampling only items would ignore how much random controls differ from each other (a
    random direction shifts every item alike, so item-level CIs of one control are tiny).
    """
    rng = np.random.default_rng(seed)
    n, k = steered.shape[0], ctrl.shape[0]
    ii = rng.integers(0, n, size=(n_boot, n))
    kk = rng.integers(0, k, size=(n_boot, k))
    s = steered[ii].mean(1)  # [boot]
    m = ctrl[:, ii].mean(2)  # [control, boot]
    c = np.take_along_axis(m.T, kk, axis=1).mean(1)  # [boot]
    lo, hi = np.quantile(s - c, [alpha / 2, 1 - alpha / 2])
    return float(steered.mean() - ctrl.mean()), float(lo), float(hi)
