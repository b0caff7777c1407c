"""The forward-pass context: where the rows of the current batch sit (padding, prompt length, KV cache).

:class:`RunContext` describes a padded batch; :func:`use_context` makes one current for the duration of a
``with`` block (a :class:`contextvars.ContextVar`, so nested and concurrent passes each see their own) and
:func:`current_context` reads it. ``intervene`` and generation set it; intervention hooks read it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from jaxtyping import Int
from torch import Tensor


@dataclass
class RunContext:
    """Where the current forward pass sits: per-row left padding, prompt length, cache offset.

    Attributes:
        pad_offset: ``[batch]`` number of left-padding tokens of each row.
        prompt_len: ``[batch]`` real prompt tokens of each row (positions after them are generated).
        past_len: positions already in the KV cache before this forward call.
        prompts: prompt texts (for prompt gates), optional.
    """

    pad_offset: Int[Tensor, " batch"]
    prompt_len: Int[Tensor, " batch"]
    past_len: int = 0
    prompts: list[str] | None = None
    gate_masks: dict[int, Tensor] = field(default_factory=dict)
    examples: list | None = None  # the batch's Example objects, for PerBatch specs

    @classmethod
    def from_batch(cls, attention_mask: Int[Tensor, "batch pos"], prompt_mask: Tensor | None = None,
                   prompts: list[str] | None = None, examples: list | None = None) -> RunContext:
        """Context for a padded batch (left or right padding) whose prompts end where ``prompt_mask`` ends."""
        attention_mask = attention_mask.long()
        pad_offset = attention_mask.cumsum(1).eq(0).sum(1)
        prompt_len = (prompt_mask.long().sum(1) if prompt_mask is not None else attention_mask.sum(1))
        return cls(pad_offset, prompt_len, 0, prompts, examples=list(examples) if examples is not None else None)

    def real_positions(self, n_new: int, device) -> Int[Tensor, "batch pos"]:
        """Index of each new position within its row's real tokens (negative on left padding)."""
        pos = torch.arange(self.past_len, self.past_len + n_new, device=device)
        return pos[None, :] - self.pad_offset.to(device)[:, None]


_CURRENT: ContextVar[RunContext | None] = ContextVar("mechvalue_run_context", default=None)


def current_context() -> RunContext | None:
    """The :class:`RunContext` of the forward pass in progress (None outside any)."""
    return _CURRENT.get()


@contextlib.contextmanager
def use_context(context: RunContext | None) -> Iterator[RunContext | None]:
    """Make ``context`` current inside the block (None keeps the enclosing one); restored on exit."""
    if context is None:
        yield current_context()
        return
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)
