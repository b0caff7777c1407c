"""The one list of steering methods: name -> what it needs and how it builds its edit.

The command line (``steer --method``, ``evaluate --method``), the steering study of ``mechvalue run``
(one arm per method) and the report (labels, order, descriptions) all read :data:`STEERING_METHODS`.
Each method is a :class:`SteeringMethod` whose ``build`` closure turns :class:`SteeringInputs` (the
target's vectors, neuron edits, gate, system prompt ...) into ``(interventions, system prompt)``.

This module is light (no torch at import): the builders import the method modules when called.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mechvalue.core.errors import MechvalueError

Built = tuple[Any, str | None]  # (interventions for ``intervene``/``generate``, system prompt or None)


@dataclass(frozen=True)
class SteeringInputs:
    """What a method may need for one target value; each method reads only its own fields.

    Attributes:
        target: canonical value name.
        vectors: the target's ConVA ``ValueVectors`` (conva, conva_nogate, caa).
        neva: NeVA's edit specs on its selected neurons (neva).
        random_neurons: the same edit on matched random neurons (random_neurons).
        system_prompt: a value system prompt (prompting).
        gate: ``texts -> bool[batch]`` relevance gate (conva; the others when ``gate_all``).
        p0: target probe probability of the closed-form push (conva, conva_nogate).
        caa_coefficient: CAA's multiplier of the mean difference.
        layers: steering layers (None: the method's own selection).
        gate_all: put CAA, NeVA and the random-neuron control behind ``gate`` too.
    """

    target: str
    vectors: Any = None
    neva: Sequence = ()
    random_neurons: Sequence = ()
    system_prompt: str | None = None
    gate: Callable[[list[str]], Any] | None = None
    p0: float | None = None
    caa_coefficient: float = 1.0
    layers: Sequence[int] | None = None
    gate_all: bool = False

    def require(self, method: str, *names: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise MechvalueError(f"steering method {method!r} needs {', '.join(missing)} for {self.target!r}")


@dataclass(frozen=True)
class SteeringMethod:
    """One steering method: ``name`` (study arm and results ``method`` column), display ``label``,
    ``cli_name`` (``--method`` choice; None: not selectable), what it ``needs`` and its ``build``."""

    name: str
    label: str
    description: str
    build: Callable[[SteeringInputs], Built]
    needs: tuple[str, ...] = ()
    cli_name: str | None = None
    tags: frozenset[str] = field(default_factory=frozenset)


def gated(build: Callable[[Any], list], gate: Callable[[list[str]], Any], name: str):
    """A ``PerBatch`` applying ``build(mask)`` where ``mask`` is the prompt gate of the batch.

    The gate runs before the edit's hooks are installed (a gate that runs the model, like a
    classifier judge, must not see its own edit).
    """
    import torch

    from mechvalue.interventions.specs import PerBatch

    def per_batch(model, examples):
        return build(torch.as_tensor(gate([e.user for e in examples]), dtype=torch.bool))
    return PerBatch(per_batch, name=name)


def _maybe_gated(specs, inputs: SteeringInputs, name: str):
    specs = list(specs)
    if not inputs.gate_all:
        return specs
    inputs.require(name, "gate")
    return gated(lambda m: [s.replace(gate=m) for s in specs], inputs.gate, name)


def _base(i: SteeringInputs) -> Built:
    return (), None


def _prompting(i: SteeringInputs) -> Built:
    i.require("prompting", "system_prompt")
    return (), i.system_prompt


def _caa(i: SteeringInputs) -> Built:
    from mechvalue.methods.conva import caa

    i.require("caa", "vectors")
    kwargs = {} if i.layers is None else {"layers": list(i.layers)}
    return _maybe_gated(caa(i.vectors, i.caa_coefficient, **kwargs), i, "caa"), None


def _conva(gate: bool) -> Callable[[SteeringInputs], Built]:
    def build(i: SteeringInputs) -> Built:
        from mechvalue.methods.conva import conva

        name = "conva" if gate else "conva_nogate"
        i.require(name, "vectors", *(("gate",) if gate else ()))
        kwargs = {} if i.layers is None else {"layers": list(i.layers)}
        return [conva(i.vectors, p0=i.p0, gate=i.gate if gate else None, **kwargs)], None
    return build


def _neuron_edit(field_name: str) -> Callable[[SteeringInputs], Built]:
    def build(i: SteeringInputs) -> Built:
        return _maybe_gated(getattr(i, field_name), i, field_name), None
    return build


STEERING_METHODS: tuple[SteeringMethod, ...] = (
    SteeringMethod("base", "base", "no edit, no system prompt: the reference every arm is paired with", _base,
                   tags=frozenset({"reference"})),
    SteeringMethod("prompting", "value system prompt", "one of the target's value-priority system prompts",
                   _prompting, ("system_prompt",), cli_name="prompt", tags=frozenset({"reference"})),
    SteeringMethod("caa", "CAA", "contrastive activation addition: coefficient x the pairs' mean difference at the "
                   "selected layers", _caa, ("vectors",), cli_name="caa"),
    SteeringMethod("conva_nogate", "ConVA, no gate", "ConVA's closed-form minimal push to probability p0 on every "
                   "prompt", _conva(False), ("vectors",), cli_name="conva"),
    SteeringMethod("conva", "ConVA (gated)", "ConVA's push behind its relevance gate (value-relevant prompts only)",
                   _conva(True), ("vectors", "gate")),
    SteeringMethod("neva", "NeVA (reconstructed)", "NeVA's probe push on its sparse value-specific neurons",
                   _neuron_edit("neva"), ("neva",), cli_name="neva"),
    SteeringMethod("random_neurons", "NeVA edit on matched random neurons", "the NeVA edit on random neurons with "
                   "the same per-layer counts: the control", _neuron_edit("random_neurons"), ("random_neurons",),
                   tags=frozenset({"control"})),
)
METHOD_NAMES: tuple[str, ...] = tuple(m.name for m in STEERING_METHODS)
CLI_METHODS: tuple[str, ...] = tuple(m.cli_name for m in STEERING_METHODS if m.cli_name)


def method(name: str) -> SteeringMethod:
    """The method whose study name (the ``method`` column of results) is ``name``."""
    for m in STEERING_METHODS:
        if name == m.name:
            return m
    raise MechvalueError(f"unknown steering method {name!r}; choose from {', '.join(METHOD_NAMES)}")


def cli_method(name: str) -> SteeringMethod:
    """The method selected by ``--method name`` on the command line (``conva`` there is ConVA without its gate,
    which needs no judge; the study's gated arm is ``conva``)."""
    for m in STEERING_METHODS:
        if name == m.cli_name:
            return m
    raise MechvalueError(f"unknown --method {name!r}; choose from {', '.join(CLI_METHODS)}")


def label(name: str) -> str:
    """Display label of a method name; unknown names (e.g. other studies' arms) are returned as they are."""
    return next((m.label for m in STEERING_METHODS if m.name == name), name)


def build_all(inputs: SteeringInputs, names: Sequence[str] = METHOD_NAMES) -> dict[str, Built]:
    """``name -> (interventions, system prompt)`` for each method in ``names``."""
    return {n: method(n).build(inputs) for n in names}
