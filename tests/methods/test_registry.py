"""The one list of steering methods: what the CLI, the study and the report read, and what each builds."""

from __future__ import annotations

import pytest

from mechvalue.core.errors import MechvalueError
from mechvalue.interventions import AddVector, PerBatch
from mechvalue.methods.registry import (
    CLI_METHODS,
    METHOD_NAMES,
    STEERING_METHODS,
    SteeringInputs,
    build_all,
    cli_method,
    label,
    method,
)


def test_every_consumer_reads_the_registry():
    from mechvalue.cli.main import build_parser
    from mechvalue.pipeline.study import ARMS

    assert ARMS == METHOD_NAMES
    steer = build_parser()._subparsers._group_actions[0].choices["steer"]
    choices = next(a.choices for a in steer._actions if a.dest == "method")
    assert tuple(choices) == CLI_METHODS == ("prompt", "caa", "conva", "neva")
    assert len(set(METHOD_NAMES)) == len(METHOD_NAMES) and all(m.label and m.description for m in STEERING_METHODS)


def test_lookup_by_study_or_cli_name_and_labels():
    assert cli_method("prompt") is method("prompting") and cli_method("conva") is method("conva_nogate")
    assert method("conva").needs == ("vectors", "gate")  # the study's gated arm
    assert label("caa") == "CAA" and label("something_else") == "something_else"
    with pytest.raises(MechvalueError, match="unknown steering method 'kindness'"):
        method("kindness")
    with pytest.raises(MechvalueError, match="unknown --method 'conva_nogate'"):
        cli_method("conva_nogate")


def test_builders_use_exactly_what_each_method_needs(tiny_model):
    import torch

    neva = (AddVector(1, torch.ones(tiny_model.cfg.d_model), 2.0),)
    rnd = (AddVector(1, -torch.ones(tiny_model.cfg.d_model), 2.0),)
    inputs = SteeringInputs("benevolence", neva=neva, random_neurons=rnd, system_prompt="Be kind.",
                            gate=lambda texts: [True] * len(texts))
    built = build_all(inputs, ("base", "prompting", "neva", "random_neurons"))
    assert built["base"] == ((), None) and built["prompting"] == ((), "Be kind.")
    assert built["neva"] == (list(neva), None) and built["random_neurons"] == (list(rnd), None)
    gated = build_all(SteeringInputs("benevolence", neva=neva, gate=inputs.gate, gate_all=True), ("neva",))
    assert isinstance(gated["neva"][0], PerBatch)  # gate_all puts the edit behind the gate
    with pytest.raises(MechvalueError, match="'caa' needs vectors"):
        method("caa").build(SteeringInputs("power"))
    with pytest.raises(MechvalueError, match="'conva' needs vectors, gate"):
        method("conva").build(SteeringInputs("power"))
