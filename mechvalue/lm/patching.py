"""Forward passes for circuit analysis: a source and a target run of the same items, aligned, cached,
patched and differentiated.

An item is one question with two answers (the value's and the conflicting one, as in a dilemma) asked
under two prompts: the *source* (e.g. with a value system prompt) and the *target* (e.g. a neutral one).
Each run holds two rows per item, one per answer. The two prompts may tokenize to different lengths;
they are aligned on their shared token suffix (the user turn, the assistant header and the answer), and
only aligned positions are ever patched.

The metric of a row pair is the dilemma preference: ``log P(value answer) - log P(conflicting answer)``
(nats, summed over answer tokens), under the run's own interventions (a steered vs unsteered model is
source and target with different ``interventions``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from mechvalue.core.errors import DataError, MechvalueError
from mechvalue.core.hooks import check_hook
from mechvalue.interventions.install import intervene
from mechvalue.lm.prompts import Example, encode


@dataclass(frozen=True)
class AlignedItem:
    """One item's token rows. ``source`` / ``target``: ``[value answer ids, conflicting answer ids]`` (prompt +
    answer); ``prompt_len``: ``(source, target)`` prompt lengths; ``answer_lens``: per answer; ``shared``: the
    length of the prompts' common token suffix (the aligned prompt positions)."""

    source: tuple[list[int], list[int]]
    target: tuple[list[int], list[int]]
    prompt_len: tuple[int, int]
    answer_lens: tuple[int, int]
    shared: int

    def positions(self, side: str, answer: int, span: str = "all") -> list[int]:
        """Aligned positions of row ``answer`` in the ``side`` run (``"source"`` or ``"target"``), in order: the
        shared prompt suffix then the answer (``span="prompt"``: the suffix only; ``"answer"``: the answer only)."""
        p = self.prompt_len[0 if side == "source" else 1]
        start = {"all": p - self.shared, "prompt": p - self.shared, "answer": p}[span]
        end = p if span == "prompt" else p + self.answer_lens[answer]
        return list(range(start, end))


def align_item(tokenizer, source: Example, target: Example, answers: Sequence[str]) -> AlignedItem:
    """Tokenize one item under both prompts and find the shared prompt suffix (at least the last token)."""
    if len(answers) != 2 or not all(isinstance(a, str) and a.strip() for a in answers):
        raise DataError(f"an item needs two non-empty answers (value, conflicting), got {answers!r}")
    rows = {}
    for side, ex in (("source", source), ("target", target)):
        ids = [encode(tokenizer, Example(ex.user, ex.system, a, ex.raw)) for a in answers]
        rows[side] = ids
    (ps, _), (pt, _) = rows["source"][0], rows["target"][0]
    k = 0
    while k < min(len(ps), len(pt)) and ps[-1 - k] == pt[-1 - k]:
        k += 1
    if k == 0:
        raise DataError("source and target prompts share no token suffix: nothing to align (they must end in the "
                        "same question and assistant header)")
    answer_ids = [r for _, r in rows["source"]]
    if answer_ids != [r for _, r in rows["target"]]:
        raise DataError("the answers tokenize differently after the source and the target prompts")
    return AlignedItem(tuple(p + r for p, r in rows["source"]), tuple(p + r for p, r in rows["target"]),
                       (len(ps), len(pt)), tuple(len(r) for r in answer_ids), k)


def batch_rows(model, rows: Sequence[list[int]]) -> tuple[Tensor, Tensor]:
    """Right-padded ``[rows, pos]`` tokens and attention mask on the model's device."""
    n_ctx = int(model.cfg.n_ctx)
    longest = max(len(r) for r in rows)
    if longest > n_ctx:
        raise DataError(f"a patching row is {longest} tokens, more than the model's context of {n_ctx}")
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    tokens = torch.full((len(rows), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):  # right padding: real tokens keep their positions
        tokens[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    device = next(model.parameters()).device
    return tokens.to(device), mask.to(device)


def preference(logits: Float[Tensor, "2 pos vocab"], item: AlignedItem, side: str) -> Float[Tensor, ""]:
    """``log P(value answer) - log P(conflicting answer)`` of one item's two rows (nats)."""
    lp = logits.float().log_softmax(-1)
    rows = item.source if side == "source" else item.target
    total = []
    for a in (0, 1):
        pos = item.positions(side, a, "answer")
        ids = torch.tensor([rows[a][p] for p in pos], device=lp.device)
        total.append(lp[a, torch.tensor(pos, device=lp.device) - 1, ids].sum())
    return total[0] - total[1]


Hook = tuple[str, Callable]


def run_item(model, item: AlignedItem, side: str, *, interventions=(), cache: Sequence[str] = (),
             hooks: Sequence[Hook] = (), grads: Sequence[str] = ()) -> tuple[Tensor, dict[str, Tensor],
                                                                              dict[str, Tensor]]:
    """One forward (and, with ``grads``, one backward) of an item's two rows on ``side``.

    Returns ``(metric, cached activations, gradients of the metric)``: activations at the hook names of
    ``cache`` (and ``grads``), ``[2, pos, ...]``; ``hooks`` are extra forward hooks (patches) run after the
    side's ``interventions``.
    """
    for name in (*cache, *grads, *(h for h, _ in hooks)):
        check_hook(model, name)
    tokens, mask = batch_rows(model, item.source if side == "source" else item.target)
    acts: dict[str, Tensor] = {}

    def keep(name: str):  # keyed by the name asked for: a bridge's hook.name is its canonical alias
        def hook(act, hook):
            if name in grads:
                act.retain_grad()
            acts[name] = act
            return act
        return hook
    def track(act, hook):  # the graph starts at the embeddings: every later activation has a gradient
        return act.detach().requires_grad_(True)
    kept = [(n, keep(n)) for n in dict.fromkeys((*cache, *grads))]
    fwd = ([("hook_embed", track)] if grads else []) + [*hooks, *kept]
    grad_ctx = torch.enable_grad() if grads else torch.inference_mode()
    with grad_ctx, intervene(model, interventions), model.hooks(fwd_hooks=fwd):
        logits = model(tokens, attention_mask=mask)
        metric = preference(logits, item, side)
        if grads:
            metric.backward()
    g = {n: (acts[n].grad if acts[n].grad is not None else torch.zeros_like(acts[n])).detach() for n in grads}
    return metric.detach(), {n: a.detach() for n, a in acts.items() if n in cache}, g


def replace_positions(source_act: Tensor, item: AlignedItem, *, span: str = "all", offsets: Sequence[int] | None = None,
                      index: tuple | None = None) -> Callable:
    """A forward hook that writes ``source_act`` (cached on the source run) into the target run at the aligned
    positions (``span``; or only the prompt-suffix positions at ``offsets`` from the answer start, -1 = the last
    prompt token), optionally only at ``index`` of the trailing dims (a head, a neuron)."""
    def pos_pairs(a: int) -> list[tuple[int, int]]:
        s, t = item.positions("source", a, span), item.positions("target", a, span)
        if offsets is not None:
            sp, tp = item.positions("source", a, "prompt"), item.positions("target", a, "prompt")
            s = [sp[o] for o in offsets if -len(sp) <= o < 0]
            t = [tp[o] for o in offsets if -len(tp) <= o < 0]
        return list(zip(s, t))

    pairs = [pos_pairs(a) for a in (0, 1)]

    def hook(act, hook):
        act = act.clone()
        for a in (0, 1):
            if not pairs[a]:
                continue
            s, t = zip(*pairs[a])
            src = source_act[a, list(s)].to(act.dtype)
            if index is None:
                act[a, list(t)] = src
            else:
                sel = (a, list(t), *index)
                act[sel] = src[(slice(None), *index)]
        return act
    return hook


def check_items(items: Sequence[AlignedItem]) -> list[AlignedItem]:
    items = list(items)
    if not items:
        raise MechvalueError("patching needs at least one item")
    return items
