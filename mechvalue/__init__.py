"""mechvalue: locate and edit human-value representations inside language models.

The public API is re-exported here; see the README for a tour.
"""

from __future__ import annotations

from .collect import ActivationStats, collect
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
from .models import WeightProcessing, load_bridge, load_model, model_info
from .prompts import Example, TokenBatch, chat, iter_batches, raw, tokenize
from .values import DIMENSIONS, VALUES, canonical

__version__ = "0.1.0"

__all__ = [
    "ActivationStats", "ContrastPair", "CorruptFileError", "DIMENSIONS", "DataError", "Dilemma", "Example",
    "HookError", "MechvalueError", "ModelUnavailableError", "PortraitItem", "Query", "ScenarioQuestion",
    "SystemPrompt", "TokenBatch", "VALUES", "ValueDescription", "WeightProcessing", "canonical", "chat",
    "check_data", "collect", "context_bias", "iter_batches", "load_bridge", "load_descriptions",
    "load_dilemmas", "load_model", "load_pairs", "load_portraits", "load_queries", "load_scenarios",
    "load_system_prompts", "model_info", "raw", "tokenize",
]
