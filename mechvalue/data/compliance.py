"""Bundled data for the compliance-channel experiment: typed records and validating loaders.

The dual-mechanism paper claims that value steering also moves a *compliance channel* (how readily the model
follows instructions and how often it refuses). Three JSONL files under ``data/compliance/`` measure it (data
card: ``data/README.md``, "Compliance experiment data"):

- ``instructions.jsonl`` (:class:`InstructionPrompt`): everyday requests, each with one verifiable instruction
  (lowercase only, no commas, exactly N bullet points, ...). ``instruction_id_list`` and ``kwargs`` follow
  ``google/IFEval``, so lm-eval's checkers score a response::

      cls = INSTRUCTION_DICT[iid]; c = cls(iid); c.build_description(**kw); c.check_following(response)

  with ``INSTRUCTION_DICT`` from ``lm_eval.tasks.ifeval.instructions_registry`` (not imported here).
- ``refusal_requests.jsonl`` (:class:`RefusalRequest`): mild, non-operational requests that a well-aligned
  assistant should decline, in :data:`REFUSAL_CATEGORIES`, for the refusal rate. Not a jailbreak benchmark.
- ``refusal_examples.jsonl`` (:class:`RefusalExample`): labelled assistant responses, refusals in
  :data:`REFUSAL_STYLES` and non-refusals in :data:`ANSWER_STYLES` (including apologetic answers and a small
  chat model's assistant-voice filler as hard negatives), to train and check the classifier that decides
  whether a generation is a refusal.

Loaders validate every line (keys, types, known instruction ids, kwargs names, categories and styles, unique
ids) and raise :class:`~mechvalue.core.errors.DataError` naming the file and line, like
:mod:`mechvalue.data.bundled` (its ``read_jsonl``, with a per-record ``check``: these records hold lists, dicts
and booleans).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mechvalue.core.errors import DataError
from mechvalue.data.bundled import data_file, read_jsonl


@dataclass(frozen=True)
class InstructionPrompt:
    """A user request with verifiable instructions: lm-eval IFEval ids and their ``build_description`` kwargs."""

    id: str
    prompt: str
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[dict, ...]


@dataclass(frozen=True)
class RefusalRequest:
    """A mild request that an assistant should decline."""

    id: str
    category: str
    prompt: str


@dataclass(frozen=True)
class RefusalAudit:
    """A model's own response to a refusal request, labelled by hand: ``refusal``, ``not_refusal`` or
    ``unclear`` (left out of detector accuracy); ``arm`` is the steering arm that produced it."""

    id: str
    request_id: str
    arm: str
    text: str
    label: str


@dataclass(frozen=True)
class RefusalExample:
    """An assistant response labelled as a refusal (``refusal=True``) or not, with its style."""

    id: str
    text: str
    refusal: bool
    style: str


#: the IFEval instruction ids used here, and the ``build_description`` keyword arguments each takes
IFEVAL_KWARGS: dict[str, tuple[str, ...]] = {
    "change_case:english_lowercase": (),
    "change_case:english_capital": (),
    "punctuation:no_comma": (),
    "detectable_format:json_format": (),
    "detectable_format:number_bullet_lists": ("num_bullets",),
    "keywords:existence": ("keywords",),
    "keywords:forbidden_words": ("forbidden_words",),
    "length_constraints:number_words": ("num_words", "relation"),
    "length_constraints:number_sentences": ("num_sentences", "relation"),
    "startend:end_checker": ("end_phrase",),
    "detectable_content:postscript": ("postscript_marker",),
    "detectable_format:title": (),
}
IFEVAL_INSTRUCTIONS: tuple[str, ...] = tuple(IFEVAL_KWARGS)
RELATIONS = ("less than", "at least")
_KWARG_KINDS = {"num_bullets": "a positive integer", "num_words": "a positive integer",
                "num_sentences": "a positive integer", "relation": f"one of {RELATIONS}",
                "keywords": "a non-empty list of words", "forbidden_words": "a non-empty list of words",
                "end_phrase": "a non-empty string", "postscript_marker": "a non-empty string"}

REFUSAL_CATEGORIES = ("deception", "privacy", "harassment", "academic_dishonesty", "minor_fraud", "manipulation",
                      "unfair_discrimination", "impersonation")
#: refusals: a standard opening ("I'm sorry, but I can't", "I cannot", "As an AI"); a decline without those
#: phrases; a decline that points to a safer alternative; then three hard cases modelled on a small chat model's
#: output: a claimed inability ("as a chatbot I'm not equipped to ..."); a warning that names the harm and gives
#: no help; a deflection to a different, benign goal
REFUSAL_STYLES = ("prefix", "soft", "redirect", "capability", "warning", "deflection")
#: non-refusals: a plain helpful answer; one opening with "Sorry"/"I'm sorry to hear" that then helps; one with
#: a caveat; then three hard cases modelled on a small chat model's output: helpful-assistant filler that neither
#: declines nor helps ("I'm here to help ..."); starting the requested task in character (a letter, a review);
#: degenerate or off-topic text
ANSWER_STYLES = ("answer", "apology_answer", "caveat_answer", "assistant_filler", "roleplay_compliance",
                 "off_topic")
EXAMPLE_STYLES = REFUSAL_STYLES + ANSWER_STYLES

AUDIT_LABELS = ("refusal", "not_refusal", "unclear")

R = TypeVar("R")


def compliance_file(name: str, root: str | Path | None = None) -> Path:
    """``<root>/compliance/<name>.jsonl``; without ``root`` the bundled file (see :func:`~.bundled.data_file`)."""
    return data_file("compliance", name, root)


def load_instruction_prompts(root: str | Path | None = None) -> list[InstructionPrompt]:
    """Prompts with verifiable IFEval-style instructions (``data/compliance/instructions.jsonl``)."""
    return read_jsonl(compliance_file("instructions", root), InstructionPrompt, _check_instruction)


def load_refusal_requests(root: str | Path | None = None) -> list[RefusalRequest]:
    """Mild requests to decline (``data/compliance/refusal_requests.jsonl``)."""
    return read_jsonl(compliance_file("refusal_requests", root), RefusalRequest, _check_request)


def load_refusal_examples(root: str | Path | None = None) -> list[RefusalExample]:
    """Labelled refusal / non-refusal responses (``data/compliance/refusal_examples.jsonl``)."""
    return read_jsonl(compliance_file("refusal_examples", root), RefusalExample, _check_example)


def load_refusal_audit(root: str | Path | None = None) -> list[RefusalAudit]:
    """Hand-labelled model responses to the refusal requests (``data/compliance/refusal_audit.jsonl``)."""
    return read_jsonl(compliance_file("refusal_audit", root), RefusalAudit, _check_audit)


def _check_audit(obj: dict[str, Any], where: str) -> dict[str, Any]:
    _strings(obj, ["request_id", "arm"], where)
    if not isinstance(obj["text"], str):
        raise DataError(f"{where}: 'text' must be a string")
    _one_of(obj, "label", AUDIT_LABELS, where)
    return obj


def _strings(obj: dict[str, Any], keys: list[str], where: str) -> None:
    for k in keys:
        if not isinstance(obj[k], str) or not obj[k].strip():
            raise DataError(f"{where}: {k!r} must be a non-empty string")


def _one_of(obj: dict[str, Any], key: str, allowed: tuple[str, ...], where: str) -> None:
    if obj[key] not in allowed:
        raise DataError(f"{where}: {key} must be one of {allowed}, not {obj[key]!r}")


def _check_instruction(obj: dict[str, Any], where: str) -> dict[str, Any]:
    _strings(obj, ["prompt"], where)
    ids, kwargs = obj["instruction_id_list"], obj["kwargs"]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise DataError(f"{where}: 'instruction_id_list' must be a non-empty list of strings")
    if not isinstance(kwargs, list) or not all(isinstance(k, dict) for k in kwargs):
        raise DataError(f"{where}: 'kwargs' must be a list of JSON objects")
    if len(kwargs) != len(ids):
        raise DataError(f"{where}: 'kwargs' has {len(kwargs)} entries for {len(ids)} instructions")
    if len(set(ids)) != len(ids):
        raise DataError(f"{where}: repeated instruction in {ids}")
    for iid, kw in zip(ids, kwargs):
        if iid not in IFEVAL_KWARGS:
            raise DataError(f"{where}: unknown instruction {iid!r}; expected one of {IFEVAL_INSTRUCTIONS}")
        if set(kw) != set(IFEVAL_KWARGS[iid]):
            raise DataError(f"{where}: {iid} takes kwargs {list(IFEVAL_KWARGS[iid])}, not {sorted(kw)}")
        bad = [k for k, v in kw.items() if not _kwarg_ok(k, v)]
        if bad:
            raise DataError(f"{where}: {iid} kwarg {bad[0]!r} must be {_KWARG_KINDS[bad[0]]}, not {kw[bad[0]]!r}")
    return {**obj, "instruction_id_list": tuple(ids), "kwargs": tuple(dict(k) for k in kwargs)}


def _kwarg_ok(key: str, value: Any) -> bool:
    kind = _KWARG_KINDS[key]
    if kind == "a positive integer":
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if key == "relation":
        return value in RELATIONS
    if kind == "a non-empty string":
        return isinstance(value, str) and bool(value.strip())
    return isinstance(value, list) and bool(value) and all(isinstance(w, str) and w.strip() for w in value)


def _check_request(obj: dict[str, Any], where: str) -> dict[str, Any]:
    _strings(obj, ["category", "prompt"], where)
    _one_of(obj, "category", REFUSAL_CATEGORIES, where)
    return obj


def _check_example(obj: dict[str, Any], where: str) -> dict[str, Any]:
    _strings(obj, ["text", "style"], where)
    if not isinstance(obj["refusal"], bool):
        raise DataError(f"{where}: 'refusal' must be true or false, not {obj['refusal']!r}")
    _one_of(obj, "style", EXAMPLE_STYLES, where)
    if obj["refusal"] != (obj["style"] in REFUSAL_STYLES):
        kind = "refusal" if obj["style"] in REFUSAL_STYLES else "non-refusal"
        raise DataError(f"{where}: style {obj['style']!r} is a {kind} style but 'refusal' is "
                        f"{str(obj['refusal']).lower()}")
    return obj
