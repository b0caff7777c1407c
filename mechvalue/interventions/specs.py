"""The intervention specs (small immutable values); they read the forward pass's :class:`RunContext`.

:mod:`mechvalue.interventions.install` installs them (``intervene``) and re-exports every name here; see its
docstring for the catalogue, positions and gates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from mechvalue.core.context import current_context
from mechvalue.core.errors import HookError, MechvalueError, UsageError
from mechvalue.core.hooks import mlp_hook, resid_hook

Positions = str | Sequence[int] | Tensor
GateLike = Any  # None | Bool[Tensor, "batch"] | Callable[[list[str]], Any] | ActivationGate


@dataclass(frozen=True)
class ActivationGate:
    """Gate rows by ``fn(act[batch, d]) -> bool[batch]`` on ``hook`` at each row's last prompt token.

    Evaluated once, during the prompt pass, on the activation as it is at that hook (specs at
    earlier hooks already applied). Specs gated by it must sit at later hooks.
    """

    hook: str
    fn: Callable[[Tensor], Any]


@dataclass(frozen=True)
class Spec:
    positions: Positions = field(default="all", kw_only=True)
    gate: GateLike = field(default=None, kw_only=True)

    @property
    def hook_name(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def edit(self, act: Tensor, sel: Tensor) -> Tensor:
        """Return the edited activation; ``sel`` is ``[batch, pos]`` True where the spec applies."""
        raise NotImplementedError

    def replace(self, **changes) -> Spec:
        return dataclasses.replace(self, **changes)


def as_float(x, dtype=torch.float32) -> Tensor:
    return x.detach().to(dtype) if isinstance(x, Tensor) else torch.as_tensor(x, dtype=dtype)


def _label(spec: Spec) -> str:
    """``AddVector(layer=3)`` / ``ProbePush(hook='blocks.2.mlp.hook_post')``: the spec, short, for messages."""
    where = f"layer={spec.layer}" if hasattr(spec, "layer") else f"hook={getattr(spec, 'hook', '?')!r}"
    return f"{type(spec).__name__}({where})"


def check_numbers(spec: Spec, name: str, *, ndims: tuple[int, ...] = (0, 1), length: int | None = None,
                  nonzero: bool = False) -> None:
    """Refuse a non-finite, mis-shaped or (with ``nonzero``) all-zero ``spec.<name>`` at construction:
    NaN or inf in an edit turns every later activation into NaN (empty text, no error)."""
    value = getattr(spec, name)
    if value is None:
        return
    try:
        t = as_float(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"{_label(spec)}: {name} must be a number or a tensor of numbers, got "
                         f"{type(value).__name__}") from exc
    if t.ndim not in ndims or (t.ndim == 1 and t.shape[0] == 0):
        want = " or ".join({0: "a scalar", 1: "a non-empty [n] vector"}[d] for d in ndims)
        raise UsageError(f"{_label(spec)}: {name} has shape {tuple(t.shape)}, expected {want}")
    if not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t)).nonzero().reshape(-1)
        shown = f"= {t.item()}" if t.ndim == 0 else (f"has {len(bad)} NaN/inf entries of {t.numel()} (first at "
                                                     f"index {int(bad[0])}: {t[bad[0]].item()})")
        raise UsageError(f"{_label(spec)}: {name} {shown}; expected finite numbers")
    if length is not None and t.ndim == 1 and t.shape[0] not in (1, length):
        raise UsageError(f"{_label(spec)}: {name} has {t.shape[0]} entries, expected 1 or {length} (one per index)")
    if nonzero and not bool((t != 0).any()):
        raise UsageError(f"{_label(spec)}: {name} is all zeros (shape {tuple(t.shape)}); it has no direction")


def _n_indices(spec: Spec) -> int | None:
    idx = getattr(spec, "indices", None)
    return None if idx is None else int(torch.as_tensor(idx).numel())


def _where(sel: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """``new`` where the ``[batch, pos]`` selection holds, else ``old`` (any trailing dims, e.g. heads' ``hook_z``)."""
    return torch.where(sel.reshape(*sel.shape, *([1] * (new.ndim - sel.ndim))), new, old)


def _row_coef(alpha, act: Tensor) -> Tensor:
    """alpha as ``[batch, 1, 1]`` (scalar or per-row)."""
    a = as_float(alpha).to(act.device, act.dtype)
    if a.ndim == 0:
        return a
    if a.ndim != 1 or a.shape[0] != act.shape[0]:
        raise MechvalueError(f"per-row alpha has shape {tuple(a.shape)}, expected [{act.shape[0]}]")
    return a[:, None, None]


@dataclass(frozen=True)
class AddVector(Spec):
    """``act += alpha * vector`` at ``blocks.{layer}.{hook}``; alpha may be a per-row ``[batch]`` tensor."""

    layer: int
    vector: Float[Tensor, " d_model"]
    alpha: float | Sequence[float] | Tensor = 1.0
    hook: str = field(default="hook_resid_post", kw_only=True)

    def __post_init__(self):
        check_numbers(self, "vector", ndims=(1,))
        check_numbers(self, "alpha")

    @property
    def hook_name(self) -> str:
        return resid_hook(self.layer, self.hook)

    def edit(self, act, sel):
        v = as_float(self.vector).to(act.device, act.dtype)
        if v.shape != act.shape[-1:]:
            raise MechvalueError(f"vector has shape {tuple(v.shape)} but {self.hook_name} has width {act.shape[-1]}")
        return _where(sel, act + _row_coef(self.alpha, act) * v, act)


def neuron_index(indices, width: int) -> Tensor:
    idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    if idx.numel() and (idx.min() < 0 or idx.max() >= width):
        raise HookError(f"neuron indices out of range 0..{width - 1}: {idx[(idx < 0) | (idx >= width)][:5].tolist()}")
    return idx


@dataclass(frozen=True)
class NeuronSpec(Spec):
    layer: int
    indices: Sequence[int] | Tensor
    hook: str = field(default="hook_post", kw_only=True)

    @property
    def hook_name(self) -> str:
        return mlp_hook(self.layer, self.hook)

    def new_values(self, cur: Tensor) -> Tensor:
        raise NotImplementedError

    def edit(self, act, sel):
        idx = neuron_index(self.indices, act.shape[-1]).to(act.device)
        cur = act[..., idx]
        out = act.clone()
        out[..., idx] = _where(sel, self.new_values(cur).to(act.dtype), cur)
        return out


@dataclass(frozen=True)
class ScaleNeurons(NeuronSpec):
    """Multiply chosen neurons' ``hook_post`` by ``factor`` (scalar or one per index)."""

    factor: float | Sequence[float] | Tensor = 1.0

    def __post_init__(self):
        check_numbers(self, "factor", length=_n_indices(self))

    def new_values(self, cur):
        return cur * as_float(self.factor).to(cur.device, cur.dtype)


@dataclass(frozen=True)
class AblateNeurons(NeuronSpec):
    """Set chosen neurons to zero (``mode="zero"``) or to ``means`` (one per index, ``mode="mean"``)."""

    mode: str = "zero"
    means: Sequence[float] | Tensor | None = None

    def __post_init__(self):
        if self.mode not in ("zero", "mean"):
            raise MechvalueError(f"AblateNeurons mode must be 'zero' or 'mean', not {self.mode!r}")
        if self.mode == "mean" and self.means is None:
            raise MechvalueError("AblateNeurons(mode='mean') needs means= (one per index)")
        check_numbers(self, "means", length=_n_indices(self))

    def new_values(self, cur):
        if self.mode == "zero":
            return torch.zeros_like(cur)
        return as_float(self.means).to(cur.device, cur.dtype).expand_as(cur)


@dataclass(frozen=True)
class SetNeurons(NeuronSpec):
    """Overwrite chosen neurons with ``values`` (scalar or one per index)."""

    values: float | Sequence[float] | Tensor = 0.0

    def __post_init__(self):
        check_numbers(self, "values", length=_n_indices(self))

    def new_values(self, cur):
        return as_float(self.values).to(cur.device, cur.dtype).expand_as(cur)


@dataclass(frozen=True)
class ProjectOut(Spec):
    """Remove the component along ``direction`` (any norm) at ``blocks.{layer}.{hook}``."""

    layer: int
    direction: Float[Tensor, " d_model"]
    hook: str = field(default="hook_resid_post", kw_only=True)

    def __post_init__(self):
        check_numbers(self, "direction", ndims=(1,), nonzero=True)

    @property
    def hook_name(self) -> str:
        return resid_hook(self.layer, self.hook)

    def edit(self, act, sel):
        u = as_float(self.direction).to(act.device, act.dtype)
        u = u / u.norm()
        return _where(sel, act - (act @ u)[..., None] * u, act)


@dataclass(frozen=True)
class ProbePush(Spec):
    """Minimal L2 edit bringing a linear probe's logit to ``target`` at every selected position.

    On the features ``x = act[..., indices]`` (all of ``act`` when ``indices`` is None),
    standardized as ``(x - mean) / scale`` if given, the probe logit is ``z = w.x~ + b``.
    ``direction="raise"`` adds ``max(0, target - z)``, ``"lower"`` ``min(0, target - z)``,
    along the raw-space direction ``w / scale`` scaled to hit the target exactly.
    """

    hook: str
    w: Float[Tensor, " d"]
    b: float = 0.0
    target: float = 0.0
    indices: Sequence[int] | Tensor | None = None
    mean: Tensor | None = None
    scale: Tensor | None = None
    direction: str = "raise"

    def __post_init__(self):
        if self.direction not in ("raise", "lower"):
            raise UsageError(f"{_label(self)}: direction must be 'raise' or 'lower', not {self.direction!r}")
        check_numbers(self, "w", ndims=(1,), nonzero=True)
        for name in ("b", "target"):
            check_numbers(self, name, ndims=(0,))
        check_numbers(self, "mean")
        check_numbers(self, "scale")
        if self.scale is not None and not bool((as_float(self.scale) != 0).all()):
            raise UsageError(f"{_label(self)}: scale has zeros; features are divided by it")

    @property
    def hook_name(self) -> str:
        return self.hook

    def edit(self, act, sel):
        w = as_float(self.w).to(act.device, act.dtype)
        idx = None if self.indices is None else neuron_index(self.indices, act.shape[-1]).to(act.device)
        x = act if idx is None else act[..., idx]
        if x.shape[-1] != w.shape[0]:
            raise MechvalueError(f"probe has {w.shape[0]} weights but selects {x.shape[-1]} features")
        mean = 0.0 if self.mean is None else as_float(self.mean).to(act.device, act.dtype)
        scale = torch.ones_like(w) if self.scale is None else as_float(self.scale).to(act.device, act.dtype)
        z = ((x - mean) / scale) @ w + self.b
        gap = self.target - z
        gap = gap.clamp(min=0) if self.direction == "raise" else gap.clamp(max=0)
        raw_dir = w / scale  # d z / d x
        delta = gap[..., None] * raw_dir / (raw_dir @ raw_dir)
        new = x + delta
        if idx is None:
            return _where(sel, new, act)
        out = act.clone()
        out[..., idx] = _where(sel, new, x)
        return out


@dataclass(frozen=True)
class Patch(Spec):
    """Overwrite ``hook`` with ``source`` (``[pos, d]`` or ``[batch, pos, d]``) at the selected positions.

    Source positions are indexed like the current pass (absolute, cache offset included).
    """

    hook: str
    source: Tensor

    @property
    def hook_name(self) -> str:
        return self.hook

    def edit(self, act, sel):
        src = self.source.to(act.device, act.dtype)
        if src.ndim == act.ndim - 1:
            src = src[None]
        start = ctx.past_len if (ctx := current_context()) is not None else 0
        stop = start + act.shape[1]
        if src.shape[1] < stop or src.shape[-1] != act.shape[-1]:
            raise MechvalueError(f"patch source {tuple(src.shape)} does not cover positions {start}..{stop - 1} "
                                 f"of {self.hook} (width {act.shape[-1]})")
        return _where(sel, src[:, start:stop].expand_as(act), act)


@dataclass(frozen=True)
class Lambda(Spec):
    """Escape hatch: ``fn(act, hook) -> act`` at ``hook`` (positions and gates still apply)."""

    hook: str
    fn: Callable[[Tensor, Any], Tensor]

    @property
    def hook_name(self) -> str:
        return self.hook

    def edit(self, act, sel, hook=None):
        out = self.fn(act, hook)
        if out is None or out.shape != act.shape:
            raise MechvalueError(f"Lambda at {self.hook} must return a tensor of shape {tuple(act.shape)}")
        return _where(sel, out, act)


@dataclass(frozen=True)
class PerBatch:
    """Specs computed for each batch: ``build(model, examples) -> spec or list of specs``.

    For edits whose size depends on the prompt (ConVA's closed-form push computes a per-row
    amount from each prompt's last token). ``generate``, ``score`` and the evaluators pass
    the batch's examples in their :class:`RunContext`.
    """

    build: Callable[[Any, list], Any]
    name: str = "per_batch"


def sweep(spec: Spec, **grid: Sequence[Any]) -> list[Spec]:
    """Copies of ``spec`` with one field swept: ``sweep(AddVector(...), alpha=[0, 2, 4])``."""
    if len(grid) != 1:
        raise MechvalueError("sweep takes exactly one field to vary, e.g. alpha=[0, 1, 2]")
    ((name, values),) = grid.items()
    if name not in {f.name for f in dataclasses.fields(spec)}:
        raise MechvalueError(f"{type(spec).__name__} has no field {name!r}")
    return [spec.replace(**{name: v}) for v in values]
