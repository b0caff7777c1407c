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
that :func:`mechvalue.lm.generation.generate` keeps current under the KV cache (left
padding, the prompt/generated boundary, the cache offset); without one, every position
of the input counts as a prompt position.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from jaxtyping import Bool
from torch import Tensor

from mechvalue.core.context import RunContext, current_context, use_context
from mechvalue.core.errors import HookError, MechvalueError
from mechvalue.core.hooks import check_hook, hook_layer
from mechvalue.interventions.specs import (
    AblateNeurons,
    ActivationGate,
    AddVector,
    GateLike,
    Lambda,
    NeuronSpec,
    Patch,
    PerBatch,
    Positions,
    ProbePush,
    ProjectOut,
    ScaleNeurons,
    SetNeurons,
    Spec,
    as_float,
    neuron_index,
    sweep,
)

# the spec classes live in mechvalue.interventions.specs; they stay importable from here
__all__ = ["AblateNeurons", "ActivationGate", "AddVector", "GateLike", "Lambda", "Patch", "PerBatch", "Positions",
           "ProbePush", "ProjectOut", "RunContext", "ScaleNeurons", "SetNeurons", "intervene", "sweep"]


# ------------------------------------------------------------------ installing

def _position_mask(spec: Spec, act: Tensor, ctx: RunContext | None,
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


def _gate_mask(spec: Spec, batch: int, ctx: RunContext, device) -> Bool[Tensor, " batch"]:
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


def _spec_hook(spec: Spec, local_gates: dict[int, Tensor]):
    def hook(act, hook):
        sel = _position_mask(spec, act, current_context(), local_gates)
        if not bool(sel.any()):
            return act
        return spec.edit(act, sel, NamedHook(hook, spec.hook_name)) if isinstance(spec, Lambda) else spec.edit(act, sel)
    return hook


class NamedHook:
    """The hook point as ``Lambda`` sees it, named as the spec asked (a bridge's ``hook.name`` is the canonical
    alias: ``blocks.1.hook_out`` for ``blocks.1.hook_resid_post``); every other attribute is the hook point's."""

    def __init__(self, hook, name: str):
        self._hook, self.name = hook, name

    def __getattr__(self, attr):
        return getattr(self._hook, attr)


def _gate_hook(gate: ActivationGate, local_gates: dict[int, Tensor]):
    """Evaluate ``gate`` at each row's last prompt token (without a context: the last position, every pass)."""
    def hook(act, hook):
        ctx = current_context()
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


def _check_spec(model, spec: Spec) -> None:
    if not isinstance(spec, Spec):
        raise MechvalueError(f"{spec!r} is not an intervention spec")
    check_hook(model, spec.hook_name)
    if isinstance(spec.positions, str) and spec.positions not in ("all", "prompt", "generated"):
        raise MechvalueError(f"positions={spec.positions!r}: use 'all', 'prompt', 'generated' or a list of indices")
    if isinstance(spec, ProbePush) and spec.direction not in ("raise", "lower"):
        raise MechvalueError(f"ProbePush direction must be 'raise' or 'lower', not {spec.direction!r}")
    width = model.cfg.d_model
    if isinstance(spec, AddVector | ProjectOut):
        v = spec.vector if isinstance(spec, AddVector) else spec.direction
        if v is None or tuple(as_float(v).shape) != (width,):
            shape = None if v is None else tuple(as_float(v).shape)
            raise MechvalueError(f"{type(spec).__name__} at layer {spec.layer}: vector shape {shape} does not "
                                 f"match the model's d_model={width}")
    if isinstance(spec, NeuronSpec):
        neuron_index(spec.indices, model.cfg.d_mlp)
    if isinstance(spec.gate, ActivationGate):
        check_hook(model, spec.gate.hook)
        gl, sl = hook_layer(spec.gate.hook), hook_layer(spec.hook_name)
        if gl is not None and sl is not None and gl > sl:
            raise HookError(f"gate at {spec.gate.hook} runs after {spec.hook_name}; gate on an earlier layer")


@contextlib.contextmanager
def intervene(model, *specs: Spec | PerBatch | Sequence | None, context: RunContext | None = None,
              prompts: list[str] | None = None) -> Iterator[RunContext | None]:
    """Install ``specs`` (flattened: lists of specs are allowed) on ``model``; always remove them.

    Nesting composes: inner specs run after outer ones at the same hook. ``context`` (or
    ``prompts`` for prompt gates) describes the batch; :func:`generate` passes its own.
    """
    flat = _expand(model, flatten_specs(specs), context)
    for s in flat:
        _check_spec(model, s)
    if context is None and prompts is not None:
        context = RunContext(torch.zeros(len(prompts), dtype=torch.long),
                             torch.full((len(prompts),), 1 << 30, dtype=torch.long), 0, list(prompts))
    gates = {id(s.gate): s.gate for s in flat if isinstance(s.gate, ActivationGate)}
    local_gates: dict[int, Tensor] = {}  # gate masks of plain forward passes (no context)
    hooks = ([(g.hook, _gate_hook(g, local_gates)) for g in gates.values()]
             + [(s.hook_name, _spec_hook(s, local_gates)) for s in flat])
    with use_context(context), model.hooks(fwd_hooks=hooks):
        yield context


def _expand(model, flat: list, context: RunContext | None) -> list[Spec]:
    """Replace each :class:`PerBatch` by the specs it builds for the context's examples."""
    out: list[Spec] = []
    for s in flat:
        if isinstance(s, PerBatch):
            if context is None or context.examples is None:
                raise MechvalueError(f"{s.name} builds its specs per batch and needs the batch's examples: use it "
                                     "through generate(), score() or mechvalue.evaluate.scores")
            out.extend(flatten_specs([s.build(model, context.examples)]))
        else:
            out.append(s)
    return out


def flatten_specs(specs) -> list[Spec | PerBatch]:
    """Specs and ``PerBatch`` builders from nested lists/tuples (None skipped); anything else is an error."""
    out: list[Spec | PerBatch] = []
    for s in specs:
        if isinstance(s, list | tuple):
            out.extend(flatten_specs(s))
        elif isinstance(s, Spec | PerBatch):
            out.append(s)
        elif s is not None:
            raise MechvalueError(f"{s!r} is not an intervention spec (AddVector, ScaleNeurons, ... or PerBatch)")
    return out

