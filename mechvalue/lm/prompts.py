"""Prompt formatting and token batches with read-span masks.

Two chat conditions (intrinsic: no system prompt, the template's own default applies;
prompted: a given system prompt), plus raw text with no template (ConVA trains on raw
sentences). An optional assistant response can be appended. Templated text already holds
the model's special tokens, so it is tokenized with ``add_special_tokens=False`` and a
BOS is prepended only when the tokenizer would add one and the template did not: never
twice.

A :class:`TokenBatch` carries tokens, the attention mask and a *read mask* per row
selecting the span that statistics read: every prompt token (``"prompt"``), the last
prompt token (``"last"``), the response tokens (``"response"``) or all (``"all"``).

Every forward pass of :mod:`mechvalue.lm` tokenizes through :func:`tokenize`, which refuses a row
longer than the model's context (``n_ctx=``, with ``reserve`` tokens kept free for generation)
before any model runs; :func:`check_count` is the shared check of counts such as ``batch_size``.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from mechvalue.core.errors import DataError, MechvalueError, UsageError

Span = Literal["prompt", "last", "response", "all"]
SPANS: tuple[str, ...] = ("prompt", "last", "response", "all")


def check_count(value, name: str, *, minimum: int = 1, error: type[MechvalueError] = UsageError) -> int:
    """``value`` as an int ``>= minimum``; bools, floats and strings are refused (``batch_size=0`` or
    ``max_new_tokens=2.5`` would otherwise fail deep inside a loop, after the first forward passes)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise error(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def context_limit(model) -> int | None:
    """The longest sequence ``model`` takes (``model.cfg.n_ctx``), or None if it does not say."""
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    return int(n_ctx) if isinstance(n_ctx, numbers.Integral) and n_ctx > 0 else None


def _check_length(row: int, n_tokens: int, n_ctx: int | None, reserve: int) -> None:
    if n_ctx is None or n_tokens + reserve <= n_ctx:
        return
    new = (f" + {reserve} generated tokens fed back (max_new_tokens - 1) = {n_tokens + reserve}" if reserve
           else "")
    raise DataError(f"example {row} is {n_tokens} tokens{new}, more than the model's context of {n_ctx} tokens "
                    f"(model.cfg.n_ctx): shorten it{' or lower max_new_tokens' if reserve else ''} (collect takes "
                    "max_length= to truncate prompts from the left)")


@dataclass(frozen=True)
class Example:
    """One model input: a chat turn (``user`` plus optional ``system``) or raw text.

    ``response`` is appended as the assistant's reply (for chat) or as a continuation (raw).
    """

    user: str
    system: str | None = None
    response: str | None = None
    raw: bool = False


def chat(user: str, system: str | None = None, response: str | None = None) -> Example:
    """A chat example; ``system=None`` is the intrinsic condition."""
    return Example(user=user, system=system, response=response)


def raw(text: str, response: str | None = None) -> Example:
    """Raw text without a chat template."""
    return Example(user=text, response=response, raw=True)


def prompt_text(tokenizer, example: Example) -> str:
    """The text of the prompt part (templated for chat examples, ending at the assistant header)."""
    if example.raw:
        return example.user
    messages = [] if example.system is None else [{"role": "system", "content": example.system}]
    messages.append({"role": "user", "content": example.user})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prepends_bos(tokenizer) -> bool:
    """Whether prompts start with the tokenizer's BOS token: whenever it defines one (TransformerLens'
    ``default_prepend_bos`` convention), whatever its own ``add_special_tokens`` does. That choice is ours, not
    the installed ``transformers``' (5.x reads SmolLM2's GGUF flag ``add_bos_token = False``, earlier releases
    prepended BOS), so activations, vectors and the shipped judge do not change with the library version."""
    return tokenizer.bos_token_id is not None


def encode(tokenizer, example: Example) -> tuple[list[int], list[int]]:
    """Token ids of ``(prompt, response)`` for one example, with at most one BOS."""
    text = prompt_text(tokenizer, example)
    prompt_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if prepends_bos(tokenizer) and (not prompt_ids or prompt_ids[0] != tokenizer.bos_token_id):
        prompt_ids = [tokenizer.bos_token_id, *prompt_ids]
    response_ids: list[int] = []
    if example.response:
        joiner = " " if example.raw and not example.response.startswith((" ", "\n")) else ""
        response_ids = list(tokenizer(joiner + example.response, add_special_tokens=False)["input_ids"])
    return prompt_ids, response_ids


@dataclass
class TokenBatch:
    """A padded batch.

    Attributes:
        tokens: ``[batch, pos]`` token ids (padding uses the pad token, or EOS).
        attention_mask: ``[batch, pos]`` 1 on real tokens.
        read_mask: ``[batch, pos]`` True on the tokens statistics read.
        prompt_mask: ``[batch, pos]`` True on prompt tokens (excludes the response).
        index: ``[batch]`` position of each row in the original example list.
        padding_side: ``"right"`` (default: exact for causal models, no position shift) or ``"left"``.
    """

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    read_mask: Bool[Tensor, "batch pos"]
    prompt_mask: Bool[Tensor, "batch pos"]
    index: Int[Tensor, " batch"]
    padding_side: str = "right"

    @property
    def last_read(self) -> Int[Tensor, " batch"]:
        """Position of the last read token of each row."""
        pos = torch.arange(self.tokens.shape[1], device=self.tokens.device)
        return torch.where(self.read_mask, pos, -1).amax(dim=1)

    def to(self, device: str | torch.device) -> TokenBatch:
        return TokenBatch(self.tokens.to(device), self.attention_mask.to(device), self.read_mask.to(device),
                          self.prompt_mask.to(device), self.index.to(device), self.padding_side)


def _span_mask(n_prompt: int, n_resp: int, span: str, special: list[bool], skip_special: bool) -> list[bool]:
    n = n_prompt + n_resp
    if span == "prompt":
        mask = [i < n_prompt for i in range(n)]
    elif span == "last":
        return [i == n_prompt - 1 for i in range(n)]
    elif span == "response":
        mask = [i >= n_prompt for i in range(n)]
    else:
        mask = [True] * n
    if skip_special:
        mask = [m and not s for m, s in zip(mask, special)]
    return mask


def tokenize(tokenizer, examples: Sequence[Example], span: Span = "prompt", *, skip_special: bool = True,
             padding_side: str = "right", max_length: int | None = None,
             index: Sequence[int] | None = None, n_ctx: int | None = None, reserve: int = 0) -> TokenBatch:
    """Tokenize and pad ``examples`` into one :class:`TokenBatch`.

    ``skip_special`` drops special tokens (BOS, ``<|im_start|>``...) from the read span
    (never from ``"last"``). ``max_length`` truncates the prompt from the left. With ``n_ctx``
    (the model's context, :func:`context_limit`) a row longer than ``n_ctx - reserve`` tokens
    (after truncation) is refused, naming the row by ``index`` (its position in the caller's list);
    generation reserves ``max_new_tokens - 1`` (its last token is sampled, never fed back).
    Raises :class:`DataError` on an empty list, an unknown span, a row with nothing to read or a too-long row.
    """
    if span not in SPANS:
        raise DataError(f"span={span!r} is not one of {SPANS}")
    if padding_side not in ("right", "left"):
        raise DataError(f"padding_side must be 'right' or 'left', not {padding_side!r}")
    if len(examples) == 0:
        raise DataError("no examples to tokenize: the dataset is empty")
    special_ids = set(tokenizer.all_special_ids)
    rows, masks, prompt_lens = [], [], []
    for k, ex in enumerate(examples):
        if not isinstance(ex, Example):
            raise DataError(f"example {k} is a {type(ex).__name__}, expected mechvalue.lm.prompts.Example")
        p, r = encode(tokenizer, ex)
        if max_length is not None and len(p) + len(r) > max_length:
            p = p[max(0, len(p) - max(1, max_length - len(r))):]
        ids = p + r
        _check_length(index[k] if index is not None else k, len(ids), n_ctx, reserve)
        mask = _span_mask(len(p), len(r), span, [t in special_ids for t in ids], skip_special)
        if not any(mask):
            what = "response" if span == "response" else "text"
            raise DataError(f"example {k} has no tokens to read for span={span!r} (empty {what}?): {ex!r:.120}")
        rows.append(ids)
        masks.append(mask)
        prompt_lens.append(len(p))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    b = len(rows)
    tokens = torch.full((b, width), pad, dtype=torch.long)
    attn = torch.zeros((b, width), dtype=torch.long)
    read = torch.zeros((b, width), dtype=torch.bool)
    prompt = torch.zeros((b, width), dtype=torch.bool)
    for i, (ids, mask, n_p) in enumerate(zip(rows, masks, prompt_lens)):
        n = len(ids)
        sl = slice(0, n) if padding_side == "right" else slice(width - n, width)
        tokens[i, sl] = torch.tensor(ids)
        attn[i, sl] = 1
        read[i, sl] = torch.tensor(mask)
        prompt[i, sl] = torch.tensor([j < n_p for j in range(n)])
    idx = torch.tensor(list(index) if index is not None else range(b), dtype=torch.long)
    return TokenBatch(tokens, attn, read, prompt, idx, padding_side)


def iter_batches(tokenizer, examples: Sequence[Example], batch_size: int = 16, span: Span = "prompt", *,
                 sort_by_length: bool = True, max_tokens: int | None = None, **kwargs) -> Iterator[TokenBatch]:
    """Yield :class:`TokenBatch` es over ``examples``.

    With ``sort_by_length`` rows of similar token length are batched together (less
    padding); ``TokenBatch.index`` maps rows back to the original order. ``max_tokens``
    caps rows x padded width per batch (a single longer row still gets its own batch), so
    peak memory depends on the budget, not on the longest example of the dataset.
    """
    check_count(batch_size, "batch_size", error=DataError)
    if max_tokens is not None:
        check_count(max_tokens, "max_tokens", error=DataError)
    if len(examples) == 0:
        raise DataError("no examples: the dataset is empty")
    order = list(range(len(examples)))
    lengths = None
    if sort_by_length or max_tokens is not None:
        lengths = [sum(len(part) for part in encode(tokenizer, ex)) for ex in examples]
        max_len = kwargs.get("max_length")
        if max_len is not None:
            lengths = [min(n, max_len) for n in lengths]
    if sort_by_length:
        order.sort(key=lambda i: lengths[i])
    chunk: list[int] = []
    for i in order:
        width = max([lengths[j] for j in chunk] + [lengths[i]]) if max_tokens is not None else 0
        if chunk and (len(chunk) >= batch_size or (max_tokens is not None and width * (len(chunk) + 1) > max_tokens)):
            yield tokenize(tokenizer, [examples[j] for j in chunk], span, index=chunk, **kwargs)
            chunk = []
        chunk.append(i)
    if chunk:
        yield tokenize(tokenizer, [examples[j] for j in chunk], span, index=chunk, **kwargs)
