"""mechvalue: locate and edit human-value representations inside language models.

The package reads as its pipeline, each layer importing only the ones before it::

    core -> data | analysis -> interventions -> lm -> evaluate -> methods -> report | export -> pipeline -> cli

The names a notebook needs are importable from here (``mechvalue.load_model``, ``mechvalue.AddVector``,
``mechvalue.generate`` ...). They are loaded on first use, so ``import mechvalue`` and the command line's
``--help`` stay fast (torch and TransformerLens load only when a model-facing name is touched).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it (one source of truth for the top-level API)
_API: dict[str, str] = {
    # core
    **dict.fromkeys(["DIMENSIONS", "VALUES", "canonical"], "mechvalue.core.values"),
    **dict.fromkeys(["CorruptFileError", "DataError", "HookError", "MechvalueError", "ModelUnavailableError"],
                    "mechvalue.core.errors"),
    # data
    **dict.fromkeys(["ContrastPair", "Dilemma", "PortraitItem", "Query", "ScenarioQuestion", "SystemPrompt",
                     "ValueDescription", "check_data", "context_bias", "load_descriptions", "load_dilemmas",
                     "load_pairs", "load_portraits", "load_queries", "load_scenarios", "load_system_prompts"],
                    "mechvalue.data.bundled"),
    # analysis
    **dict.fromkeys(["Probe", "diff_in_means", "orthogonalize", "svd_axes", "train_probe"],
                    "mechvalue.analysis.vectors"),
    **dict.fromkeys(["NeuronSet", "angle_classes", "matched_random"], "mechvalue.analysis.neurons"),
    # interventions
    **dict.fromkeys(["AblateNeurons", "ActivationGate", "AddVector", "Lambda", "Patch", "PerBatch", "ProbePush",
                     "ProjectOut", "RunContext", "ScaleNeurons", "SetNeurons", "intervene", "sweep"],
                    "mechvalue.interventions.install"),
    **dict.fromkeys(["random_like", "versus_random"], "mechvalue.interventions.controls"),
    # lm
    **dict.fromkeys(["WeightProcessing", "load_bridge", "load_model", "model_info"], "mechvalue.lm.models"),
    **dict.fromkeys(["backend_of"], "mechvalue.lm.backends"),
    **dict.fromkeys(["FAMILIES"], "mechvalue.lm.families"),
    **dict.fromkeys(["estimate", "model_config"], "mechvalue.lm.sizing"),
    **dict.fromkeys(["Example", "TokenBatch", "chat", "iter_batches", "raw", "tokenize"], "mechvalue.lm.prompts"),
    **dict.fromkeys(["ActivationStats", "collect"], "mechvalue.lm.collect"),
    **dict.fromkeys(["Generation", "generate", "score"], "mechvalue.lm.generation"),
    # evaluate
    **dict.fromkeys(["dilemma_preference", "mmlu_accuracy", "perplexity", "questionnaire"],
                    "mechvalue.evaluate.scores"),
    **dict.fromkeys(["direction_activations", "neuron_summary", "top_activating"], "mechvalue.evaluate.audit"),
    # export
    **dict.fromkeys(["export_gguf", "export_safetensors", "load_bundle", "load_control_vector_gguf", "load_specs"],
                    "mechvalue.export"),
}
_SUBPACKAGES = ("core", "data", "analysis", "interventions", "lm", "evaluate", "methods", "report", "export",
                "pipeline", "cli")

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"mechvalue.{name}")
    raise AttributeError(f"module 'mechvalue' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, *_SUBPACKAGES])


if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from mechvalue.analysis.neurons import NeuronSet, angle_classes, matched_random  # noqa: F401
    from mechvalue.analysis.vectors import Probe, diff_in_means, orthogonalize, svd_axes, train_probe  # noqa: F401
    from mechvalue.interventions.install import AddVector, intervene  # noqa: F401
    from mechvalue.lm.generation import generate, score  # noqa: F401
    from mechvalue.lm.models import load_model  # noqa: F401
