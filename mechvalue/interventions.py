"""Interventions as small immutable values, installed with a context manager.

A spec names its hook and what it does to the activation there::

    AddVector(layer, vector, alpha)            # residual stream += alpha * vector
    ScaleNeurons(layer, indices, factor)       # mlp.hook_post[..., idx] *= factor
    AblateNeurons(layer, indices, "mean", means=...)
    SetNeurons(layer, indices, values)
    ProjectOut(layer, direction)
    ProbePush(hook, w, b, target)              # minimal edit to a linear probe's logit
    Patch(hook, source)                        # overwrite with recorded activations
    Lambda(hook, fn)                           # escape hatch

``with intervene(model, *specs): ...`` installs them and always removes them. Every spec
can be restricted to positions (``"all"``, ``"prompt"``, ``"generated"``, or explicit
indices counted from each row's first real token) and gated per batch row (a boolean
tensor, a function of the prompt texts, or an :class:`ActivationGate` reading an
activation at the last prompt token). Positions and gates read a :class:`RunContext`
that :func:`mechvalue.generation.generate` keeps current under the KV cache (left
padding, the prompt/generated boundary, the cache offset); without one, every position
of the input counts as a prompt position.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .errors import HookError, MechvalueError
from .hooks import check_hook, hook_layer, mlp_hook, resid_hook

Positions = str | Sequence[int] | Tensor
GateLike = Any  # None | Bool[Tensor, "batch"] | Callable[[list[str]], Any] | ActivationGate


@dataclass
class RunContext:
    """Where the current forward pass sits: per-row left padding, prompt length, cache offset.

    Attributes:
        pad_offset: ``[batch]`` number of left-padding tokens of each row.
        prompt_len: ``[batch]`` real prompt tokens of each row (positions after them are generated).
        past_len: positions already in the KV cache before this forward call.
        prompts: prompt texts (for prompt gates), optional.
    """

    pad_offset: Int[Tensor, " batch"]
    prompt_len: Int[Tensor, " batch"]
    past_len: int = 0
    prompts: list[str] | None = None
    gate_masks: dict[int, Tensor] = field(default_factory=dict)
    examples: list | None = None  # the batch's Example objects, for PerBatch specs

    @classmethod
    def from_batch(cls, attention_mask: Int[Tensor, "batch pos"], prompt_mask: Tensor | None = None,
                   prompts: list[str] | None = None, examples: list | None = None) -> RunContext:
        """Context for a padded batch (left or right padding) whose prompts end where ``prompt_mask`` ends."""
        attention_mask = attention_mask.long()
        pad_offset = attention_mask.cumsum(1).eq(0).sum(1)
        prompt_len = (prompt_mask.long().sum(1) if prompt_mask is not None else attention_mask.sum(1))
        return cls(pad_offset, prompt_len, 0, prompts, examples=list(examples) if examples is not None else None)

    def real_positions(self, n_new: int, device) -> Int[Tensor, "batch pos"]:
        """Index of each new position within its row's real tokens (negative on left padding)."""
        pos = torch.arange(self.past_len, self.past_len + n_new, device=device)
        return pos[None, :] - self.pad_offset.to(device)[:, None]


@dataclass(frozen=True)
class ActivationGate:
    """Gate rows by ``fn(act[batch, d]) -> bool[batch]`` on ``hook`` at each row's last prompt token.

    Evaluated once, during the prompt pass, on the activation as it is at that hook (specs at
    earlier hooks already applied). Specs gated by it must sit at later hooks.
    """

    hook: str
    fn: Callable[[Tensor], Any]


@dataclass(frozen=True)
class _Spec:
    positions: Positions = field(default="all", kw_only=True)
    gate: GateLike = field(default=None, kw_only=True)

    @property
    def hook_name(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def edit(self, act: Tensor, sel: Tensor) -> Tensor:
        """Return the edited activation; ``sel`` is ``[batch, pos]`` True where the spec applies."""
        raise NotImplementedError

    def replace(self, **changes) -> _Spec:
        return dataclasses.replace(self, **changes)


def _as_float(x, dtype=torch.float32) -> Tensor:
    return x.detach().to(dtype) if isinstance(x, Tensor) else torch.as_tensor(x, dtype=dtype)


def _where(sel: Tensor, new: Tensor, old: Tensor) -> Tensor:
    return torch.where(sel[..., None], new, old)


def _row_coef(alpha, act: Tensor) -> Tensor:
    """alpha as ``[batch, 1, 1]`` (scalar or per-row)."""
    a = _as_float(alpha).to(act.device, act.dtype)
    if a.ndim == 0:
        return a
    if a.ndim != 1 or a.shape[0] != act.shape[0]:
        raise MechvalueError(f"per-row alpha has shape {tuple(a.shape)}, expected [{act.shape[0]}]")
    return a[:, None, None]


@dataclass(frozen=True)
class AddVector(_Spec):
    """``act += alpha * vector`` at ``blocks.{layer}.{hook}``; alpha may be a per-row ``[batch]`` tensor."""

    layer: int
    vector: Float[Tensor, " d_model"]
    alpha: float | Tensor = 1.0
    hook: str = field(default="hook_resid_post", kw_only=True)

    @property
    def hook_name(self) -> str:
        return resid_hook(self.layer, self.hook)

    def edit(self, act, sel):
        v = _as_float(self.vector).to(act.device, act.dtype)
        if v.shape != act.shape[-1:]:
            raise MechvalueError(f"vector has shape {tuple(v.shape)} but {self.hook_name} has width {act.shape[-1]}")
        return _where(sel, act + _row_coef(self.alpha, act) * v, act)


def _neuron_index(indices, width: int) -> Tensor:
    idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    if idx.numel() and (idx.min() < 0 or idx.max() >= width):
        raise HookError(f"neuron indices out of range 0..{width - 1}: {idx[(idx < 0) | (idx >= width)][:5].tolist()}")
    return idx


@dataclass(frozen=True)
class _NeuronSpec(_Spec):
    layer: int
    indices: Sequence[int] | Tensor
    hook: str = field(default="hook_post", kw_only=True)

    @property
    def hook_name(self) -> str:
        return mlp_hook(self.layer, self.hook)

    def new_values(self, cur: Tensor) -> Tensor:
        raise NotImplementedError

    def edit(self, act, sel):
        idx = _neuron_index(self.indices, act.shape[-1]).to(act.device)
        cur = act[..., idx]
        out = act.clone()
        out[..., idx] = _where(sel, self.new_values(cur).to(act.dtype), cur)
        return out


@dataclass(frozen=True)
class ScaleNeurons(_NeuronSpec):
    """Multiply chosen neurons' ``hook_post`` by ``factor`` (scalar or one per index)."""

    factor: float | Sequence[float] | Tensor = 1.0

    def new_values(self, cur):
        return cur * _as_float(self.factor).to(cur.device, cur.dtype)


@dataclass(frozen=True)
class AblateNeurons(_NeuronSpec):
    """Set chosen neurons to zero (``mode="zero"``) or to ``means`` (one per index, ``mode="mean"``)."""

    mode: str = "zero"
    means: Sequence[float] | Tensor | None = None

    def __post_init__(self):
        if self.mode not in ("zero", "mean"):
            raise MechvalueError(f"AblateNeurons mode must be 'zero' or 'mean', not {self.mode!r}")
        if self.mode == "mean" and self.means is None:
            raise MechvalueError("AblateNeurons(mode='mean') needs means= (one per index)")

    def new_values(self, cur):
        if self.mode == "zero":
            return torch.zeros_like(cur)
        return _as_float(self.means).to(cur.device, cur.dtype).expand_as(cur)


@dataclass(frozen=True)
class SetNeurons(_NeuronSpec):
    """Overwrite chosen neurons with ``values`` (scalar or one per index)."""

    values: float | Sequence[float] | Tensor = 0.0

    def new_values(self, cur):
        return _as_float(self.values).to(cur.device, cur.dtype).expand_as(cur)


@dataclass(frozen=True)
class ProjectOut(_Spec):
    """Remove the component along ``direction`` (any norm) at ``blocks.{layer}.{hook}``."""

    layer: int
    direction: Float[Tensor, " d_model"]
    hook: str = field(default="hook_resid_post", kw_only=True)

    @property
    def hook_name(self) -> str:
        return resid_hook(self.layer, self.hook)

    def edit(self, act, sel):
        u = _as_float(self.direction).to(act.device, act.dtype)
        u = u / u.norm()
        return _where(sel, act - (act @ u)[..., None] * u, act)


@dataclass(frozen=True)
class ProbePush(_Spec):
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

    @property
    def hook_name(self) -> str:
        return self.hook

    def edit(self, act, sel):
        w = _as_float(self.w).to(act.device, act.dtype)
        idx = None if self.indices is None else _neuron_index(self.indices, act.shape[-1]).to(act.device)
        x = act if idx is None else act[..., idx]
        if x.shape[-1] != w.shape[0]:
            raise MechvalueError(f"probe has {w.shape[0]} weights but selects {x.shape[-1]} features")
        mean = 0.0 if self.mean is None else _as_float(self.mean).to(act.device, act.dtype)
        scale = torch.ones_like(w) if self.scale is None else _as_float(self.scale).to(act.device, act.dtype)
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
class Patch(_Spec):
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
        start = _CURRENT.ctx.past_len if _CURRENT.ctx is not None else 0
        stop = start + act.shape[1]
        if src.shape[1] < stop or src.shape[-1] != act.shape[-1]:
            raise MechvalueError(f"patch source {tuple(src.shape)} does not cover positions {start}..{stop - 1} "
                                 f"of {self.hook} (width {act.shape[-1]})")
        return _where(sel, src[:, start:stop].expand_as(act), act)


@dataclass(frozen=True)
class Lambda(_Spec):
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


# ------------------------------------------------------------------ installing


class _Current:
    ctx: RunContext | None = None


_CURRENT = _Current()


def _position_mask(spec: _Spec, act: Tensor, ctx: RunContext | None,
                   local_gates: dict[int, Tensor] | None = None) -> Bool[Tensor, "batch pos"]:
    b, p = act.shape[0], act.shape[1]
    if ctx is None:  # a plain forward pass: every position is a prompt position
        ctx = RunContext(torch.zeros(b, dtype=torch.long), torch.full((b,), p, dtype=torch.long),
                         gate_masks=dict(local_gates or {}))
    real = ctx.real_positions(p, act.device)  # [b, p]
    valid = real >= 0
    pos = spec.positions
    if isinstance(pos, str):
        prompt_len = ctx.prompt_len.to(act.device)[:, None]
        if pos == "all":
            sel = valid
        elif pos == "prompt":
            sel = valid & (real < prompt_len)
        elif pos == "generated":
            sel = real >= prompt_len
        else:
            raise MechvalueError(f"positions={pos!r}: use 'all', 'prompt', 'generated' or a list of indices")
    else:
        wanted = torch.as_tensor(pos, dtype=torch.long, device=act.device).reshape(-1)
        sel = valid & (real[..., None] == wanted).any(-1)
    return sel & _gate_mask(spec, b, ctx, act.device)[:, None]


def _gate_mask(spec: _Spec, batch: int, ctx: RunContext, device) -> Bool[Tensor, " batch"]:
    g = spec.gate
    if g is None:
        return torch.ones(batch, dtype=torch.bool, device=device)
    if isinstance(g, ActivationGate):
        mask = ctx.gate_masks.get(id(g))
        if mask is None:
            raise HookError(f"{spec.hook_name} is gated by an ActivationGate at {g.hook}, which has not run yet "
                            "in this pass: gate on an earlier hook")
    elif callable(g):
        key = id(g)
        if key not in ctx.gate_masks:
            if ctx.prompts is None:
                raise MechvalueError("a prompt gate needs the prompt texts: pass prompts= to intervene()/generate()")
            ctx.gate_masks[key] = torch.as_tensor(g(list(ctx.prompts)), dtype=torch.bool).reshape(-1)
        mask = ctx.gate_masks[key]
    else:
        mask = torch.as_tensor(g, dtype=torch.bool).reshape(-1)
    if mask.shape[0] != batch:
        raise MechvalueError(f"gate gives {mask.shape[0]} rows but the batch has {batch}")
    return mask.to(device)


def _spec_hook(spec: _Spec, local_gates: dict[int, Tensor]):
    def hook(act, hook):
        sel = _position_mask(spec, act, _CURRENT.ctx, local_gates)
        if not bool(sel.any()):
            return act
        return spec.edit(act, sel, hook) if isinstance(spec, Lambda) else spec.edit(act, sel)
    return hook


def _gate_hook(gate: ActivationGate, local_gates: dict[int, Tensor]):
    """Evaluate ``gate`` at each row's last prompt token (without a context: the last position, every pass)."""
    def hook(act, hook):
        ctx = _CURRENT.ctx
        rows = torch.arange(act.shape[0], device=act.device)
        if ctx is None:
            last = torch.full_like(rows, act.shape[1] - 1)
        elif ctx.past_len != 0 or id(gate) in ctx.gate_masks:
            return act
        else:
            last = (ctx.pad_offset + ctx.prompt_len).clamp(max=act.shape[1]).to(act.device) - 1
        mask = torch.as_tensor(gate.fn(act[rows, last]), dtype=torch.bool).reshape(-1).cpu()
        (local_gates if ctx is None else ctx.gate_masks)[id(gate)] = mask
        return act
    return hook


def _check_spec(model, spec: _Spec) -> None:
    if not isinstance(spec, _Spec):
        raise MechvalueError(f"{spec!r} is not an intervention spec")
    check_hook(model, spec.hook_name)
    if isinstance(spec.positions, str) and spec.positions not in ("all", "prompt", "generated"):
        raise MechvalueError(f"positions={spec.positions!r}: use 'all', 'prompt', 'generated' or a list of indices")
    if isinstance(spec, ProbePush) and spec.direction not in ("raise", "lower"):
        raise MechvalueError(f"ProbePush direction must be 'raise' or 'lower', not {spec.direction!r}")
    width = model.cfg.d_model
    if isinstance(spec, AddVector | ProjectOut):
        v = spec.vector if isinstance(spec, AddVector) else spec.direction
        if v is None or tuple(_as_float(v).shape) != (width,):
            shape = None if v is None else tuple(_as_float(v).shape)
            raise MechvalueError(f"{type(spec).__name__} at layer {spec.layer}: vector shape {shape} does not "
                                 f"match the model's d_model={width}")
    if isinstance(spec, _NeuronSpec):
        _neuron_index(spec.indices, model.cfg.d_mlp)
    if isinstance(spec.gate, ActivationGate):
        check_hook(model, spec.gate.hook)
        gl, sl = hook_layer(spec.gate.hook), hook_layer(spec.hook_name)
        if gl is not None and sl is not None and gl > sl:
            raise HookError(f"gate at {spec.gate.hook} runs after {spec.hook_name}; gate on an earlier layer")


@contextlib.contextmanager
def intervene(model, *specs: _Spec, context: RunContext | None = None,
              prompts: list[str] | None = None) -> Iterator[RunContext | None]:
    """Install ``specs`` (flattened: lists of specs are allowed) on ``model``; always remove them.

    Nesting composes: inner specs run after outer ones at the same hook. ``context`` (or
    ``prompts`` for prompt gates) describes the batch; :func:`generate` passes its own.
    """
    flat = _expand(model, _flatten(specs), context)
    for s in flat:
        _check_spec(model, s)
    if context is None and prompts is not None:
        context = RunContext(torch.zeros(len(prompts), dtype=torch.long),
                             torch.full((len(prompts),), 1 << 30, dtype=torch.long), 0, list(prompts))
    gates = {id(s.gate): s.gate for s in flat if isinstance(s.gate, ActivationGate)}
    local_gates: dict[int, Tensor] = {}  # gate masks of plain forward passes (no context)
    hooks = ([(g.hook, _gate_hook(g, local_gates)) for g in gates.values()]
             + [(s.hook_name, _spec_hook(s, local_gates)) for s in flat])
    previous = _CURRENT.ctx
    if context is not None:
        _CURRENT.ctx = context
    try:
        with model.hooks(fwd_hooks=hooks):
            yield context
    finally:
        _CURRENT.ctx = previous


def _expand(model, flat: list, context: RunContext | None) -> list[_Spec]:
    """Replace each :class:`PerBatch` by the specs it builds for the context's examples."""
    out: list[_Spec] = []
    for s in flat:
        if isinstance(s, PerBatch):
            if context is None or context.examples is None:
                raise MechvalueError(f"{s.name} builds its specs per batch and needs the batch's examples: use it "
                                     "through generate(), score() or mechvalue.evaluate")
            out.extend(_flatten([s.build(model, context.examples)]))
        else:
            out.append(s)
    return out


def _flatten(specs) -> list[_Spec]:
    out: list[_Spec] = []
    for s in specs:
        if isinstance(s, list | tuple):
            out.extend(_flatten(s))
        elif s is not None:
            out.append(s)
    return out


def sweep(spec: _Spec, **grid: Sequence[Any]) -> list[_Spec]:
    """Copies of ``spec`` with one field swept: ``sweep(AddVector(...), alpha=[0, 2, 4])``."""
    if len(grid) != 1:
        raise MechvalueError("sweep takes exactly one field to vary, e.g. alpha=[0, 1, 2]")
    ((name, values),) = grid.items()
    if name not in {f.name for f in dataclasses.fields(spec)}:
        raise MechvalueError(f"{type(spec).__name__} has no field {name!r}")
    return [spec.replace(**{name: v}) for v in values]
