"""Batched generation and continuation scoring under interventions.

:func:`generate` runs a KV-cached sampling loop over left-padded batches, keeping a
:class:`~mechvalue.interventions.install.RunContext` current so specs see the right positions:
the prompt pass, then one forward per generated token, the intervention applied to the
prompt positions and to every generated token including the first. Deterministic for a
seed (a private ``torch.Generator``). :func:`score` gives the log-probability of given
continuations under the same interventions, batched.

Both check their arguments and tokenize every batch (refusing a prompt longer than the model's
context, :func:`mechvalue.lm.prompts.tokenize`) before the first forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechvalue.core.errors import MechvalueError, UsageError
from mechvalue.interventions.install import ActivationGate, RunContext, Spec, flatten_specs, intervene
from mechvalue.lm.backends import Decoder, logits_at
from mechvalue.lm.prompts import Example, TokenBatch, chat, check_count, context_limit, prompt_text, tokenize


@dataclass
class Generation:
    """Result of :func:`generate` (lists follow the input order).

    Attributes:
        texts: decoded continuations (stop strings cut off).
        tokens: generated token ids per row (up to and including EOS if produced).
        logprobs: per-token log-probabilities of the generated tokens (if requested).
    """

    texts: list[str]
    tokens: list[list[int]]
    logprobs: list[list[float]] | None = None


def _as_examples(prompts) -> list[Example]:
    if isinstance(prompts, str | Example):
        prompts = [prompts]
    out = [p if isinstance(p, Example) else chat(p) for p in prompts]
    if not out:
        raise MechvalueError("no prompts to generate from")
    return out


def check_sampling(temperature: float, top_p: float) -> None:
    """``temperature`` finite and >= 0 (0 = greedy), ``top_p`` in (0, 1]."""
    if isinstance(temperature, bool) or not isinstance(temperature, Real) or not math.isfinite(temperature) \
            or temperature < 0:
        raise UsageError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if isinstance(top_p, bool) or not isinstance(top_p, Real) or not 0 < top_p <= 1:
        raise UsageError(f"top_p must be a number in (0, 1] (1 = no nucleus cut), got {top_p!r}")


def _for_rows(interventions, rows: Sequence[int], n: int) -> list:
    """The specs with per-prompt tensors (``alpha``, boolean ``gate``) picked for one batch's ``rows``.

    Callers give per-row alphas and gates in input order (``[n]``); batches are sorted and
    split, so each batch gets its own rows. Anything that is not a spec passes through.
    """
    idx = torch.as_tensor(list(rows), dtype=torch.long)

    def pick(x, what: str):
        t = torch.as_tensor(x)
        if t.ndim != 1 or t.shape[0] != n:
            raise MechvalueError(f"{what} has shape {tuple(t.shape)}, expected [{n}]: one per prompt")
        return t[idx.to(t.device)]

    out = []
    for s in flatten_specs([interventions]):
        if isinstance(s, Spec):
            changes = {}
            alpha = getattr(s, "alpha", None)
            if alpha is not None and not isinstance(alpha, int | float) and torch.as_tensor(alpha).ndim > 0:
                changes["alpha"] = pick(alpha, "per-row alpha")
            if s.gate is not None and not callable(s.gate) and not isinstance(s.gate, ActivationGate):
                changes["gate"] = pick(s.gate, "gate")
            s = s.replace(**changes) if changes else s
        out.append(s)
    return out


def _sample(logits: Float[Tensor, "batch vocab"], temperature: float, top_p: float,
            gen: torch.Generator) -> Int[Tensor, " batch"]:
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(-1).to(logits.device)


@torch.inference_mode()
def generate(model, prompts: Sequence[str | Example] | str | Example, interventions=(), *,
             max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
             stop: Sequence[str] | str | None = None, seed: int = 0, batch_size: int = 16,
             return_logprobs: bool = False, progress: bool = False, use_cache: bool = True) -> Generation:
    """Generate continuations of ``prompts`` (strings are user turns in the intrinsic chat condition).

    ``interventions`` is a spec or list of specs (see :mod:`mechvalue.interventions.install`), applied
    to prompt positions and every generated token according to each spec's ``positions``.
    ``temperature=0`` is greedy. Generation of a row ends at EOS, at ``max_new_tokens`` or
    at the first stop string (which is cut from the text). Per-row gate and alpha tensors
    follow the order of ``prompts`` (rows are sorted by length and batched internally).
    ``use_cache=False`` re-runs the whole sequence at every step (the reference for the KV cache).
    Works on both backends (:mod:`mechvalue.lm.backends`).
    """
    examples = _as_examples(prompts)
    max_new_tokens = check_count(max_new_tokens, "max_new_tokens")
    batch_size = check_count(batch_size, "batch_size")
    check_sampling(temperature, top_p)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    tok = model.tokenizer
    eos = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    gen = torch.Generator().manual_seed(seed)
    texts, tokens_out, lps_out = [None] * len(examples), [None] * len(examples), [None] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: len(prompt_text(tok, examples[i])))
    chunks = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    batches = [tokenize(tok, [examples[i] for i in idx], span="all", skip_special=False, padding_side="left",
                        index=idx, n_ctx=context_limit(model), reserve=max_new_tokens - 1) for idx in chunks]
    for idx, batch in tqdm(list(zip(chunks, batches)), desc="generate", disable=not progress):
        ctx = RunContext.from_batch(batch.attention_mask, batch.prompt_mask,
                                    [examples[i].user for i in idx], [examples[i] for i in idx])
        with intervene(model, _for_rows(interventions, idx, len(examples)), context=ctx):
            new_tokens, new_lps = _generate_batch(Decoder(model, use_cache), batch, ctx, max_new_tokens,
                                                  (temperature, top_p, gen), eos, stops)
        for r, i in enumerate(idx):
            text = tok.decode([t for t in new_tokens[r] if t not in eos], skip_special_tokens=True)
            for s in stops:
                if s in text:
                    text = text[:text.index(s)]
            texts[i], tokens_out[i], lps_out[i] = text, new_tokens[r], new_lps[r]
    return Generation(texts, tokens_out, lps_out if return_logprobs else None)


def _generate_batch(decoder: Decoder, batch: TokenBatch, ctx: RunContext, max_new_tokens: int, sampling: tuple,
                    eos: set[int], stops: list[str]) -> tuple[list[list[int]], list[list[float]]]:
    """The decoding loop of one left-padded batch (interventions installed by the caller)."""
    model = decoder.model
    tok, device, b = model.tokenizer, next(model.parameters()).device, batch.tokens.shape[0]
    done = torch.zeros(b, dtype=torch.bool)
    new_tokens: list[list[int]] = [[] for _ in range(b)]
    new_lps: list[list[float]] = [[] for _ in range(b)]
    tokens = batch.tokens.to(device)
    logits = decoder.prefill(tokens, batch.attention_mask.to(device))
    for step in range(max_new_tokens):
        nxt = _sample(logits, *sampling)
        logp = torch.log_softmax(logits.float(), -1).gather(-1, nxt[:, None]).squeeze(-1)
        for r in range(b):
            if done[r]:
                continue
            t = int(nxt[r])
            new_tokens[r].append(t)
            new_lps[r].append(float(logp[r]))
            if t in eos or (stops and any(s in tok.decode(new_tokens[r]) for s in stops)):
                done[r] = True
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        ctx.past_len = tokens.shape[1] + step if decoder.use_cache else 0
        logits = decoder.step(nxt)
    return new_tokens, new_lps


@torch.inference_mode()
def score(model, prompts: Sequence[str | Example], continuations: Sequence[Sequence[str]], interventions=(), *,
          batch_size: int = 16, reduce: str = "sum", progress: bool = False) -> Float[Tensor, "n k"]:
    """Log-probability of each continuation given its prompt: ``[n_prompts, k_candidates]``.

    Continuations are scored as the assistant's response (chat prompts) or as a text
    continuation (raw prompts). ``reduce="sum"`` (default) or ``"mean"`` over tokens.
    Interventions apply with the candidate tokens counted as generated positions; per-row gate
    and alpha tensors are per prompt (``[n_prompts]``, shared by its candidates).
    """
    examples = _as_examples(prompts)
    batch_size = check_count(batch_size, "batch_size")
    k = _check_continuations(continuations, len(examples))
    if reduce not in ("sum", "mean"):
        raise MechvalueError(f"reduce must be 'sum' or 'mean', not {reduce!r}")
    flat = [Example(e.user, e.system, c, e.raw) for e, cs in zip(examples, continuations) for c in cs]
    tok = model.tokenizer
    device = next(model.parameters()).device
    out = torch.empty(len(flat))
    starts = range(0, len(flat), batch_size)
    batches = [tokenize(tok, flat[start:start + batch_size], span="response", skip_special=False,
                        padding_side="right", index=[j // k for j in range(start, min(start + batch_size, len(flat)))],
                        n_ctx=context_limit(model)) for start in starts]
    for start, batch in tqdm(list(zip(starts, batches)), desc="score", disable=not progress):
        chunk = flat[start:start + batch_size]
        ctx = RunContext.from_batch(batch.attention_mask, batch.prompt_mask, [e.user for e in chunk],
                                    [examples[(start + j) // k] for j in range(len(chunk))])
        rows = [(start + j) // k for j in range(len(chunk))]  # per-row gates/alphas are per prompt
        mask = batch.read_mask[:, 1:]  # logits at t predict token t + 1
        r, c = mask.nonzero(as_tuple=True)
        with intervene(model, _for_rows(interventions, rows, len(examples)), context=ctx):
            logits = logits_at(model, batch.tokens.to(device), batch.attention_mask.to(device), r.to(device),
                               c.to(device))
        logp = torch.log_softmax(logits.float(), -1).gather(-1, batch.tokens[r, c + 1, None].to(device))[:, 0].cpu()
        total = torch.zeros(len(chunk)).index_add_(0, r, logp)
        out[start:start + len(chunk)] = total / mask.sum(1) if reduce == "mean" else total
    return out.reshape(len(examples), k)


def _check_continuations(continuations, n: int) -> int:
    """The number of continuations per prompt (the same for all, >= 1; each a list of strings)."""
    if isinstance(continuations, str) or len(continuations) != n:
        got = "a string" if isinstance(continuations, str) else f"{len(continuations)} lists"
        raise MechvalueError(f"{n} prompts but {got} of continuations; expected one list of strings per prompt")
    for i, c in enumerate(continuations):
        if isinstance(c, str) or not all(isinstance(x, str) for x in c):
            raise UsageError(f"continuations[{i}] must be a list of strings, got {c!r:.80}; wrap one "
                             "continuation as [text]")
    k = len(continuations[0]) if continuations else 0
    if k == 0 or any(len(c) != k for c in continuations):
        raise MechvalueError("every prompt needs the same number (>= 1) of continuations")
    return k
