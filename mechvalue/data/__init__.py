"""Datasets: the bundled value datasets (:mod:`.bundled`), public datasets read by path (:mod:`.public`,
:mod:`.mmlu`) and dataset synthesis through an OpenAI-compatible endpoint (:mod:`.synthesize`).

The bundled loaders and record types are re-exported here (``from mechvalue.data import load_pairs``), with
those of the compliance-channel data (:mod:`.compliance`).
"""

from mechvalue.data.bundled import (
    ContrastPair,
    Dilemma,
    PortraitItem,
    Query,
    ScenarioQuestion,
    SystemPrompt,
    ValueDescription,
    check_data,
    check_user_data,
    context_bias,
    data_dir,
    data_file,
    load_descriptions,
    load_dilemmas,
    load_pairs,
    load_portraits,
    load_queries,
    load_scenarios,
    load_system_prompts,
    read_jsonl,
    using_data,
)
from mechvalue.data.compliance import (
    InstructionPrompt,
    RefusalExample,
    RefusalRequest,
    load_instruction_prompts,
    load_refusal_examples,
    load_refusal_requests,
)

__all__ = ["ContrastPair", "Dilemma", "PortraitItem", "Query", "ScenarioQuestion", "SystemPrompt", "ValueDescription",
           "check_data", "check_user_data", "context_bias", "data_dir", "data_file", "load_descriptions",
           "load_dilemmas", "load_pairs", "load_portraits", "load_queries", "load_scenarios", "load_system_prompts",
           "read_jsonl", "using_data", "InstructionPrompt", "RefusalExample", "RefusalRequest",
           "load_instruction_prompts", "load_refusal_examples", "load_refusal_requests"]
