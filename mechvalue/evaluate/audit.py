"""Audits: what a neuron or a direction responds to, and what a neuron writes.

- :func:`top_activating` — the texts on which neuron ``(layer, index)``'s
  ``blocks.{layer}.mlp.hook_post`` (or ``hook_pre``) reaches its highest value, with the
  per-token activations of each;
- :func:`direction_activations` — the same for the projection of any hook's activation on
  a direction (a value vector, a probe);
- :func:`neuron_summary` — the norm of the neuron's ``W_out`` row and its logit-lens
  tokens (``W_out[layer][index] @ W_U``, through the final norm's weight when unfolded);
- :func:`save_audit` / :func:`load_audit` — one JSON file per audit, written atomically.

Texts are read raw (no chat template); special tokens (BOS) are left out of the tokens
and activations reported. The default texts are a seeded sample of the bundled data: the
pairs' sentences and the neutral queries.
"""

from __future__ import annotations

import heapq
import json
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from mechvalue.core.artifacts import write_json_atomic
from mechvalue.core.errors import CorruptFileError, HookError, MechvalueError
from mechvalue.core.hooks import check_hook, check_layers, hook_layer, mlp_hook
from mechvalue.lm.prompts import raw, tokenize

KINDS = ("neuron", "direction")
MLP_HOOKS = ("post", "pre", "pre_linear")


def default_texts(n: int = 256, seed: int = 0) -> list[str]:
    """A seeded sample of ``n`` bundled texts: contrastive pairs' sentences (both sides) and neutral queries."""
    from mechvalue.data.bundled import load_pairs, load_queries

    pairs = load_pairs()
    texts = [p.positive for p in pairs] + [p.negative for p in pairs] + [q.text for q in load_queries()]
    texts = list(dict.fromkeys(texts))
    return random.Random(seed).sample(texts, min(n, len(texts)))


def _check_index(model, layer: int, index: int) -> tuple[int, int]:
    layer = check_layers(model, [layer])[0]
    d_mlp = model.cfg.d_mlp
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < d_mlp:
        raise HookError(f"neuron index {index!r} does not exist: layer {layer} has {d_mlp} neurons (0..{d_mlp - 1})")
    return layer, index


@torch.inference_mode()
def _scan(model, hook_name: str, read: Callable[[Tensor], Tensor], texts: Sequence[str], k: int,
          batch_size: int, max_length: int) -> list[dict]:
    """Top-``k`` texts by the max over their tokens of ``read(act) -> [batch, pos]``."""
    if k < 1:
        raise MechvalueError(f"k must be >= 1, got {k}")
    if batch_size < 1:
        raise MechvalueError(f"batch_size must be >= 1, got {batch_size}")
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise MechvalueError("no texts to audit (empty list or only blank strings)")
    check_hook(model, hook_name)
    layer = hook_layer(hook_name)
    stop = layer + 1 if layer is not None else None
    tok = model.tokenizer
    device = next(model.parameters()).device
    heap: list[tuple[float, int, dict]] = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        batch = tokenize(tok, [raw(t) for t in chunk], span="all", skip_special=True, padding_side="right",
                         max_length=max_length)
        _, cache = model.run_with_cache(batch.tokens.to(device), attention_mask=batch.attention_mask.to(device),
                                        names_filter=hook_name, stop_at_layer=stop)
        values = read(cache[hook_name].float()).cpu()  # [batch, pos]
        for r, text in enumerate(chunk):
            mask = batch.read_mask[r]
            acts = values[r][mask]
            ids = batch.tokens[r][mask].tolist()
            j = int(acts.argmax())
            best = float(acts[j])
            item = (best, -(start + r), {"text": text, "tokens": [tok.decode([i]) for i in ids],
                                         "acts": [float(a) for a in acts], "max": best, "argmax": j})
            if len(heap) < k:
                heapq.heappush(heap, item)
            elif item[:2] > heap[0][:2]:
                heapq.heapreplace(heap, item)
    return [d for _, _, d in sorted(heap, key=lambda x: x[:2], reverse=True)]


def top_activating(model, layer: int, index: int, texts: Sequence[str] | None = None, *, k: int = 5,
                   hook: str = "post", batch_size: int = 16, max_length: int = 256) -> list[dict]:
    """The ``k`` texts with the highest max activation of neuron ``(layer, index)``, best first.

    ``hook``: ``"post"`` (``blocks.{layer}.mlp.hook_post``, the scalar multiplying the
    ``W_out`` row), ``"pre"`` or ``"pre_linear"``. Each result: ``{"text", "tokens"`` (str
    per token), ``"acts"`` (float per token), ``"max"``, ``"argmax"`` (token position of the max)``}``.
    """
    layer, index = _check_index(model, layer, index)
    if hook not in MLP_HOOKS:
        raise MechvalueError(f"hook must be one of {MLP_HOOKS}, not {hook!r}")
    texts = default_texts() if texts is None else list(texts)
    return _scan(model, mlp_hook(layer, f"hook_{hook}"), lambda a: a[..., index], texts, k, batch_size, max_length)


def direction_activations(model, hook_name: str, direction: Float[Tensor, " d"], texts: Sequence[str] | None = None,
                          k: int = 5, *, batch_size: int = 16, max_length: int = 256) -> list[dict]:
    """Top-``k`` texts by the max projection of ``hook_name``'s activation ``[batch, pos, d]`` on unit ``direction``."""
    u = torch.as_tensor(direction).detach().float().reshape(-1)
    norm = float(u.norm())
    if not norm > 0 or not torch.isfinite(u).all():
        raise MechvalueError("direction must be a finite, non-zero vector")
    u = u / norm

    def read(act: Tensor) -> Tensor:
        if act.shape[-1] != u.shape[0]:
            raise MechvalueError(f"direction has {u.shape[0]} entries but {hook_name} has width {act.shape[-1]}")
        return act @ u.to(act.device)

    texts = default_texts() if texts is None else list(texts)
    return _scan(model, hook_name, read, texts, k, batch_size, max_length)


@torch.inference_mode()
def neuron_summary(model, layer: int, index: int, k: int = 10) -> dict:
    """``W_out`` row norm (and its rank in the layer) and the top/bottom ``k`` logit-lens tokens of the neuron.

    The logit-lens vector is ``(W_out[layer][index] * w_final) @ W_U``: ``w_final`` is the
    final norm's weight when it is not folded into ``W_U`` (1 otherwise).
    """
    layer, index = _check_index(model, layer, index)
    w_out = model.W_out[layer].float()  # [d_mlp, d_model]
    row = w_out[index]
    norms = w_out.norm(dim=-1)
    scale = getattr(getattr(model, "ln_final", None), "w", None)
    vec = row * scale.float() if scale is not None else row
    logits = (vec @ model.W_U.float()).cpu()  # [d_vocab]
    k = min(k, logits.shape[0])
    top, bottom = logits.topk(k), (-logits).topk(k)
    tok = model.tokenizer

    def rows(ids, vals):
        return [{"token": tok.decode([int(i)]) if int(i) < len(tok) else f"<{int(i)}>", "id": int(i),
                 "logit": float(v)} for i, v in zip(ids, vals)]

    return {"layer": layer, "index": index, "hook": mlp_hook(layer), "w_out_norm": float(norms[index]),
            "w_out_norm_rank": int((norms > norms[index]).sum()) + 1, "d_mlp": int(w_out.shape[0]),
            "top_tokens": rows(top.indices, top.values), "bottom_tokens": rows(bottom.indices, -bottom.values)}


def mark_max(example: dict, left: str = "[[", right: str = "]]") -> str:
    """The example's text rebuilt from its tokens with the max-activation token marked (``[[token]]``)."""
    j = example.get("argmax")
    if j is None:
        acts = example["acts"]
        j = max(range(len(acts)), key=acts.__getitem__)
    return "".join(f"{left}{t}{right}" if i == j else t for i, t in enumerate(example["tokens"]))


def save_audit(path: str | os.PathLike, kind: str, layer: int | None, index: int | None, label: str | None,
               examples: Sequence[dict], **extra) -> Path:
    """Write ``{"kind", "layer", "index", "label", "examples", ...extra}`` as JSON, atomically."""
    if kind not in KINDS:
        raise MechvalueError(f"kind must be one of {KINDS}, not {kind!r}")
    for n, ex in enumerate(examples):
        missing = {"text", "tokens", "acts", "max"} - set(ex)
        if missing:
            raise MechvalueError(f"example {n} lacks {sorted(missing)}; pass the dicts top_activating returns")
    path = Path(path)
    write_json_atomic(path, {"kind": kind, "layer": layer, "index": index, "label": label,
                             "examples": list(examples), **extra})
    return path


def load_audit(path: str | os.PathLike) -> dict:
    """Read a file written by :func:`save_audit`; :class:`CorruptFileError` if unreadable or of another kind."""
    path = Path(path)
    if not path.exists():
        raise CorruptFileError(f"{path}: no such file")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(obj, dict) or obj.get("kind") not in KINDS or not isinstance(obj.get("examples"), list):
        raise CorruptFileError(f"{path}: not an audit file (needs kind in {KINDS} and a list of examples)")
    return obj
