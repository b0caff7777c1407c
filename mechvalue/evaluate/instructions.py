"""Verifiable-instruction checks with lm-eval's IFEval checkers (Zhou et al. 2023), offline.

:func:`follows` runs ``lm_eval.tasks.ifeval.instructions_registry`` checkers ("strict" mode:
the response as written) on responses to prompts that carry ``instruction_id_list`` and ``kwargs``
(the IFEval record format; mechvalue's own prompts are in ``data/compliance/instructions.jsonl``).
The checkers are lm-eval's code, not regexes of ours.

Offline caveat: lm-eval's sentence counter calls nltk's Punkt tokenizer, whose trained English
model must be downloaded. Where nltk has no ``punkt_tab`` data, :func:`ensure_punkt` installs an
*untrained* Punkt model (empty abbreviation, collocation and sentence-starter lists) in
mechvalue's cache folder before lm-eval is imported, so nothing is downloaded: sentences then
end at ``.``, ``!`` or ``?`` followed by a space, and an abbreviation such as "Dr." counts as a
sentence end. :func:`punkt_status` says which model is in use; the compliance step records it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mechvalue.core.errors import DataError, MechvalueError

__all__ = ["ensure_punkt", "follows", "known_instructions", "punkt_status"]

_PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def _cache_root() -> Path:
    return Path(os.environ.get("MECHVALUE_CACHE", Path.home() / ".cache" / "mechvalue")) / "nltk_data"


@functools.cache
def ensure_punkt() -> str:
    """Make ``nltk.data.find("tokenizers/punkt_tab/english")`` succeed without a download; returns the status."""
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return "trained (nltk data found)"
    except LookupError:
        pass
    root = _cache_root()
    folder = root / "tokenizers" / "punkt_tab" / "english"
    folder.mkdir(parents=True, exist_ok=True)
    for name in _PUNKT_FILES:
        (folder / name).touch()
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return "untrained (offline: no abbreviation list)"


def punkt_status() -> str:
    """Which Punkt model lm-eval's sentence counter uses (see the module doc)."""
    return ensure_punkt()


@functools.cache
def _registry() -> Mapping:
    ensure_punkt()
    try:
        from lm_eval.tasks.ifeval import instructions_registry
    except ImportError as exc:
        raise MechvalueError("instruction checks need lm-eval's IFEval checkers: pip install 'lm-eval[ifeval]' "
                             f"({exc})") from exc
    return instructions_registry.INSTRUCTION_DICT


def known_instructions() -> tuple[str, ...]:
    """Instruction ids lm-eval's IFEval registry checks."""
    return tuple(sorted(_registry()))


def _checker(instruction_id: str, kwargs: Mapping, prompt: str):
    registry = _registry()
    if instruction_id not in registry:
        raise DataError(f"unknown IFEval instruction {instruction_id!r}; lm-eval knows {sorted(registry)}")
    checker = registry[instruction_id](instruction_id)
    try:
        checker.build_description(**{k: v for k, v in dict(kwargs).items() if v is not None})
    except TypeError as exc:
        raise DataError(f"bad kwargs {dict(kwargs)} for IFEval instruction {instruction_id!r}: {exc}") from exc
    args = checker.get_instruction_args()
    if args and "prompt" in args:
        checker.build_description(prompt=prompt)
    return checker


def follows(responses: Sequence[str], prompts: Sequence[str], instruction_ids: Sequence[Sequence[str]],
            kwargs: Sequence[Sequence[Mapping]]) -> np.ndarray:
    """``[n, k]`` booleans: whether response ``i`` follows instruction ``j`` of its prompt (strict IFEval).

    ``instruction_ids[i]`` and ``kwargs[i]`` are the prompt's lists (one dict per instruction); every
    prompt must have the same number ``k`` of instructions. An empty response follows nothing.
    """
    n = len(responses)
    if not (len(prompts) == len(instruction_ids) == len(kwargs) == n):
        raise MechvalueError(f"follows: {n} responses, {len(prompts)} prompts, {len(instruction_ids)} id lists and "
                             f"{len(kwargs)} kwargs lists; need one of each per response")
    if n == 0:
        raise DataError("follows: no responses to check")
    k = {len(ids) for ids in instruction_ids}
    if len(k) != 1 or 0 in k or any(len(ids) != len(kw) for ids, kw in zip(instruction_ids, kwargs)):
        raise DataError("follows: every prompt needs the same number (>= 1) of instruction ids, each with its kwargs")
    out = np.zeros((n, k.pop()), dtype=bool)
    for i, (resp, prompt, ids, kws) in enumerate(zip(responses, prompts, instruction_ids, kwargs)):
        for j, (iid, kw) in enumerate(zip(ids, kws)):
            checker = _checker(iid, kw, prompt)
            out[i, j] = bool(resp.strip()) and bool(checker.check_following(resp))
    return out
