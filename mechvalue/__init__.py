"""mechvalue: locate and edit human-value representations inside language models.

The public API is re-exported here; see the README for a tour. Steered text generation is
``mechvalue.generation.generate`` (``mechvalue.generate`` is the dataset-generation module).
"""

from __future__ import annotations

from .audit import direction_activations, neuron_summary, top_activating
from .collect import ActivationStats, collect
from .controls import random_like, versus_random
from .data import (
    ContrastPair,
    Dilemma,
    PortraitItem,
    Query,
    ScenarioQuestion,
    SystemPrompt,
    ValueDescription,
    check_data,
    context_bias,
    load_descriptions,
    load_dilemmas,
    load_pairs,
    load_portraits,
    load_queries,
    load_scenarios,
    load_system_prompts,
)
from .errors import CorruptFileError, DataError, HookError, MechvalueError, ModelUnavailableError
from .evaluate import dilemma_preference, mmlu_accuracy, perplexity, questionnaire
from .export import export_gguf, export_safetensors, load_bundle, load_control_vector_gguf, load_specs
from .generation import Generation, score
from .interventions import (
    AblateNeurons,
    ActivationGate,
    AddVector,
    Lambda,
    Patch,
    PerBatch,
    ProbePush,
    ProjectOut,
    RunContext,
    ScaleNeurons,
    SetNeurons,
    intervene,
    sweep,
)
from .models import WeightProcessing, load_bridge, load_model, model_info
from .neurons import NeuronSet, angle_classes, matched_random
from .prompts import Example, TokenBatch, chat, iter_batches, raw, tokenize
from .values import DIMENSIONS, VALUES, canonical
from .vectors import Probe, diff_in_means, orthogonalize, svd_axes, train_probe

__version__ = "0.1.0"

__all__ = [
    "AblateNeurons", "ActivationGate", "AddVector", "Generation", "Lambda", "NeuronSet", "Patch", "PerBatch",
    "Probe", "ProbePush", "ProjectOut", "RunContext", "ScaleNeurons", "SetNeurons", "angle_classes",
    "diff_in_means", "dilemma_preference", "intervene", "matched_random", "mmlu_accuracy",
    "orthogonalize", "perplexity", "questionnaire", "score", "svd_axes", "sweep", "train_probe",
    "ActivationStats", "ContrastPair", "CorruptFileError", "DIMENSIONS", "DataError", "Dilemma", "Example",
    "HookError", "MechvalueError", "ModelUnavailableError", "PortraitItem", "Query", "ScenarioQuestion",
    "SystemPrompt", "TokenBatch", "VALUES", "ValueDescription", "WeightProcessing", "canonical", "chat",
    "check_data", "collect", "context_bias", "iter_batches", "load_bridge", "load_descriptions",
    "load_dilemmas", "load_model", "load_pairs", "load_portraits", "load_queries", "load_scenarios",
    "load_system_prompts", "model_info", "raw", "tokenize", "random_like", "versus_random",
    "direction_activations", "neuron_summary", "top_activating", "export_gguf", "export_safetensors", "load_bundle",
    "load_control_vector_gguf", "load_specs",
]
