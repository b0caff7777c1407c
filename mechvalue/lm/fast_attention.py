"""Fused blocks for KV-cached decoding on ``HookedTransformer``.

TransformerLens' blocks, used as they are for cached decoding, make a decode step of a small
model much slower than the same weights in Hugging Face (measured on SmolLM2-135M, batch 8,
one CPU thread: 166 ms a step against 117 ms for a plain HF loop). Its attention keeps
*unrotated* keys in the cache and re-rotates every cached key at every step, expands grouped
KV heads over the whole cache with ``repeat_interleave`` and materialises scores and pattern;
each block normalises its input three times (once each for Q, K and V); each layer rebuilds
the rotary table lookup. :func:`fast_attention` swaps in, for the duration of a ``with`` block,
a forward for each block and its attention that:

- runs the pre-norm block once through the same hook points in the same order
  (``hook_resid_pre``, ``ln1``, attention, ``hook_attn_out``, ``hook_resid_mid``, ``ln2``, the
  MLP module with all its hooks, ``hook_mlp_out``, ``hook_resid_post``), ``ln1`` once;
- projects Q, K, V with the same weights and calls ``hook_q``, ``hook_k``, ``hook_v`` (and QK
  norms where the config has them);
- rotates only the new queries and keys, at TransformerLens' left-padding-aware positions
  (one table lookup per forward, shared by the layers), and stores *rotated* keys in the cache;
- attends with ``torch.nn.functional.scaled_dot_product_attention`` (grouped heads without
  copies) under TransformerLens' own causal (and local-window) mask and the padding mask;
  query rows with no visible key give ``z = 0``, as TransformerLens' NaN-to-zero does;
- calls ``hook_z`` and applies ``W_O`` as TransformerLens does.

A cache filled this way holds rotated keys, so a :class:`~mechvalue.lm.backends.Decoder` uses
the fused path for a whole generation or not at all. :func:`fast_attention_blocker` says why a
model or its installed hooks need the reference path. ``tests/lm/test_fast_attention.py`` and
the architecture matrix check logits and steered generations against the reference path.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import einops
import torch
import torch.nn.functional as F  # noqa: N812
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["attend", "fast_attention", "fast_attention_blocker", "rotate"]

_UNHOOKABLE = ("hook_attn_scores", "hook_pattern", "hook_rot_q", "hook_rot_k")
_OLMO = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM", "OlmoForCausalLM")


def _hooked(module) -> bool:
    return bool(module is not None and (module._forward_hooks or module._forward_pre_hooks))


def fast_attention_blocker(model) -> str | None:
    """Why ``model`` (a ``HookedTransformer`` with its current hooks) must decode on the reference path; None if not."""
    cfg = model.cfg
    flags = {"use_attn_result": cfg.use_attn_result, "use_split_qkv_input": cfg.use_split_qkv_input,
             "use_attn_in": cfg.use_attn_in, "load_in_4bit": getattr(cfg, "load_in_4bit", False),
             "use_attention_sinks": getattr(cfg, "use_attention_sinks", False),
             "use_logn_attn": getattr(cfg, "use_logn_attn", False),
             "clip_qkv": getattr(cfg, "clip_qkv", None) is not None,
             "parallel_attn_mlp": cfg.parallel_attn_mlp, "attn_only": cfg.attn_only,
             "use_normalization_before_and_after": cfg.use_normalization_before_and_after}
    on = [k for k, v in flags.items() if v]
    if on:
        return f"config sets {', '.join(on)}"
    if cfg.positional_embedding_type not in ("rotary", "standard"):
        return f"{cfg.positional_embedding_type} positions"
    if (getattr(cfg, "attn_scores_soft_cap", -1.0) or -1.0) > 0:
        return "attention-score soft-capping"
    if cfg.attention_dir != "causal":
        return f"{cfg.attention_dir} attention"
    if cfg.original_architecture in _OLMO:
        return "OLMo's post-norms and QK handling"
    for block in model.blocks:
        if getattr(block.attn, "_attention_dir_override", None):
            return "an attention-direction override"
        if _hooked(block) or _hooked(block.attn):
            return "a PyTorch module hook on a block or its attention"
        hooked = [name for name in _UNHOOKABLE if _hooked(getattr(block.attn, name, None))]
        if hooked:
            return f"hooks on {block.attn.hook_pattern.name.rsplit('.', 1)[0]}.{hooked[0]}"
    return None


def rotate(x: Float[Tensor, "batch pos head d_head"], cos: Float[Tensor, "batch pos 1 rot"],
           sin: Float[Tensor, "batch pos 1 rot"], adjacent_pairs: bool) -> Float[Tensor, "batch pos head d_head"]:
    """Rotary embedding of the first ``rot`` dims of ``x`` (TransformerLens' formula: ``x cos + flip(x) sin``).

    ``adjacent_pairs`` rotates (x0, x1), (x2, x3)... (GPT-J); otherwise the two halves (GPT-NeoX, Llama).
    """
    n = cos.shape[-1]
    x_rot, x_pass = x[..., :n], x[..., n:]
    if adjacent_pairs:
        flip = torch.stack((-x_rot[..., 1::2], x_rot[..., ::2]), -1).flatten(-2)
    else:
        flip = torch.cat((-x_rot[..., n // 2:], x_rot[..., :n // 2]), -1)
    out = x_rot * cos + flip * sin
    return out if x_pass.shape[-1] == 0 else torch.cat((out, x_pass), -1)


def attend(q: Float[Tensor, "batch q_pos head d_head"], k: Float[Tensor, "batch k_pos kv_head d_head"],
           v: Float[Tensor, "batch k_pos kv_head d_head"], causal: Float[Tensor, "1 1 q_pos k_pos"],
           attention_mask: Int[Tensor, "batch k_pos"] | None, scale: float) -> Float[Tensor, "batch q_pos head d_head"]:
    """Softmax attention of ``q`` over ``k``/``v`` (grouped heads allowed) where ``causal`` and the padding mask allow.

    ``causal`` is boolean (True = visible). Rows that see no key give zeros. Pure function.
    """
    visible = causal if attention_mask is None else causal & attention_mask.bool()[:, None, None, :]
    z = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2).to(q.dtype), v.transpose(1, 2).to(q.dtype),
                                       attn_mask=visible, scale=scale, enable_gqa=k.shape[2] != q.shape[2])
    if q.shape[1] > 1:  # left padding: a pad query may see nothing
        z = z.masked_fill(~visible.any(-1, keepdim=True), 0.0)
    return z.transpose(1, 2)


def _project(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """``x @ W + b`` for TransformerLens' per-head ``W [head, d_model, d_head]``: ``[batch, pos, head, d_head]``."""
    flat = w.permute(0, 2, 1).reshape(-1, w.shape[1])  # [(head d_head), d_model]: a view in nn.Linear layout
    return F.linear(x, flat, b.reshape(-1)).unflatten(-1, (w.shape[0], w.shape[2]))


def _rotary(attn, memo: dict, offset: int, n_new: int, attention_mask) -> tuple[Tensor, Tensor] | None:
    """(cos, sin) ``[batch, n_new, 1, rot]`` at the new positions, looked up once per forward and table."""
    table = attn.rotary_cos
    if attn.cfg.use_dynamic_ntk_rope or offset + n_new > table.shape[0]:
        return None  # TransformerLens rebuilds or extends its table: let it
    key = (attn._rotary_base(), tuple(table.shape), table.device, offset, n_new)  # layers share equal tables
    if key not in memo:
        if attention_mask is None:
            pos = torch.arange(offset, offset + n_new, device=table.device)[None]
        else:
            pos = (attention_mask.cumsum(1) - 1).clamp(min=0)[:, offset:].to(table.device)
        memo[key] = (table[pos, None, :], attn.rotary_sin[pos, None, :])
    return memo[key]


def _append(entry, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Append to a cache entry in place: its ``past_keys``/``past_values`` become views of buffers grown by doubling.

    TransformerLens' ``append`` concatenates, copying the whole cache at every step.
    """
    if entry.frozen:
        return entry.append(k, v)
    old, new = entry.past_keys.shape[1], k.shape[1]
    buf = getattr(entry, "_mv_buffers", None)
    if buf is None or buf[0].shape[1] < old + new or buf[0].shape[0] != k.shape[0] \
            or buf[0].data_ptr() != entry.past_keys.data_ptr():
        size = max(2 * (old + new), 64)
        buf = tuple(torch.empty(k.shape[0], size, *k.shape[2:], dtype=k.dtype, device=k.device) for _ in range(2))
        buf[0][:, :old], buf[1][:, :old] = entry.past_keys, entry.past_values
        entry._mv_buffers = buf
    buf[0][:, old:old + new], buf[1][:, old:old + new] = k, v
    entry.past_keys, entry.past_values = buf[0][:, :old + new], buf[1][:, :old + new]
    return entry.past_keys, entry.past_values


def _attention(attn, memo: dict, x: Float[Tensor, "batch pos d_model"], past_kv_cache_entry,
               attention_mask: Int[Tensor, "batch all_pos"] | None) -> Float[Tensor, "batch pos d_model"]:
    cfg = attn.cfg
    grouped = hasattr(attn, "_W_K") and not cfg.ungroup_grouped_query_attention
    q = attn.hook_q(_project(x, attn.W_Q, attn.b_Q))
    k = attn.hook_k(_project(x, attn._W_K, attn._b_K) if grouped else _project(x, attn.W_K, attn.b_K))
    v = attn.hook_v(_project(x, attn._W_V, attn._b_V) if grouped else _project(x, attn.W_V, attn.b_V))
    if cfg.use_qk_norm:
        q, k = attn._apply_qk_norm(q, attn.q_norm), attn._apply_qk_norm(k, attn.k_norm)
    offset = past_kv_cache_entry.past_keys.size(1)
    if attention_mask is not None and attention_mask.device != q.device:  # blocks spread over devices (n_devices)
        attention_mask = attention_mask.to(q.device)
    if cfg.positional_embedding_type == "rotary":
        table = _rotary(attn, memo, offset, q.shape[1], attention_mask)
        if table is None:
            q, k = attn.apply_rotary(q, offset, attention_mask), attn.apply_rotary(k, offset, attention_mask)
        else:
            q, k = (rotate(t.to(table[0].device), *table, cfg.rotary_adjacent_pairs) for t in (q, k))
    k, v = _append(past_kv_cache_entry, k, v)  # rotated keys: [batch, key_pos, kv_head, d_head]
    z = attn.hook_z(attend(q, k, v, attn._make_causal_mask(q.shape[1], k.shape[1], offset, q.device), attention_mask,
                           1.0 / float(attn.attn_scale)))
    w = einops.rearrange(attn.W_O, "head d_head d_model -> d_model (head d_head)")  # a view in nn.Linear layout
    return F.linear(z.reshape(*z.shape[:2], -1).to(w.dtype), w, attn.b_O)


def _attn_forward(attn, memo, query_input, key_input, value_input, past_kv_cache_entry=None,
                  additive_attention_mask=None, attention_mask=None, position_bias=None, **kwargs):
    if past_kv_cache_entry is None or additive_attention_mask is not None or position_bias is not None or kwargs \
            or query_input is not key_input or key_input is not value_input:
        raise RuntimeError("fused attention is for KV-cached decoding only (mechvalue.lm.backends.Decoder)")
    return _attention(attn, memo, query_input, past_kv_cache_entry, attention_mask)


def _block_forward(block, resid_pre, shortformer_pos_embed=None, past_kv_cache_entry=None, attention_mask=None):
    """TransformerLens' pre-norm block (``TransformerBlock.forward``'s default branch), ``ln1`` applied once."""
    if past_kv_cache_entry is None or shortformer_pos_embed is not None:
        raise RuntimeError("fused blocks are for KV-cached decoding only (mechvalue.lm.backends.Decoder)")
    resid_pre = block.hook_resid_pre(resid_pre)
    x = block.ln1(resid_pre)
    attn_out = block.attn(x, x, x, past_kv_cache_entry=past_kv_cache_entry, attention_mask=attention_mask)
    attn_out = block.hook_attn_out(attn_out)
    resid_mid = block.hook_resid_mid(resid_pre.to(attn_out.device) + attn_out)
    mlp_in = block.hook_mlp_in(resid_mid.clone()) if block.cfg.use_hook_mlp_in else resid_mid
    mlp_out = block.hook_mlp_out(block.mlp(block.ln2(mlp_in)))
    return block.hook_resid_post(resid_mid + mlp_out)


@contextlib.contextmanager
def fast_attention(model) -> Iterator[None]:
    """Within the block, every block of ``model`` runs the fused cached forward (one forward pass); always undone."""
    memo: dict = {}  # rotary lookups of this forward pass
    patched = []
    try:
        for block in model.blocks:
            for module, fn in ((block, functools.partial(_block_forward, block)),
                               (block.attn, functools.partial(_attn_forward, block.attn, memo))):
                module.forward = fn
                patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward  # the instance attribute; the class method shows through again
