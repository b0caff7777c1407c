"""Interventions: immutable specs (:mod:`.specs`), installing them as hooks with ``intervene``
(:mod:`.install`), and matched random controls (:mod:`.controls`).

The specs and ``intervene`` are re-exported here (``from mechvalue.interventions import AddVector``).
"""

from mechvalue.interventions.install import (
    AblateNeurons,
    ActivationGate,
    AddVector,
    GateLike,
    Lambda,
    Patch,
    PerBatch,
    Positions,
    ProbePush,
    ProjectOut,
    RunContext,
    ScaleNeurons,
    SetNeurons,
    intervene,
    sweep,
)
from mechvalue.interventions.specs import NeuronSpec, Spec

__all__ = ["AblateNeurons", "ActivationGate", "AddVector", "GateLike", "Lambda", "NeuronSpec", "Patch", "PerBatch",
           "Positions", "ProbePush", "ProjectOut", "RunContext", "ScaleNeurons", "SetNeurons", "Spec", "intervene",
           "sweep"]
