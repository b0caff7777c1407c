"""Two model backends behind one hook API: ``HookedTransformer`` and ``TransformerBridge``.

TransformerLens 3.x has both: ``HookedTransformer`` (its own re-implementation of each
architecture, weights converted) and ``TransformerBridge`` (the Hugging Face modules
themselves, wrapped with TransformerLens hook names; ``enable_compatibility_mode()``
adds the ``HookedTransformer`` aliases mechvalue uses: ``blocks.{l}.mlp.hook_post``,
``hook_resid_post``, ``W_out``, ``W_U``). TransformerLens 4.x keeps only the bridge.

Everything outside :mod:`mechvalue.lm` sees one model object and its hooks; the few places
where the two differ (the forward call with a KV cache, logits at chosen positions) go through
the functions here, chosen by :func:`backend_of`.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from importlib.metadata import version
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechvalue.core.errors import ModelUnavailableError
from mechvalue.core.hooks import BACKENDS
from mechvalue.lm.fast_attention import fast_attention, fast_attention_blocker

__all__ = ["BACKENDS", "Decoder", "backend_of", "boot_bridge", "forward", "hooked_available", "logits_at",
           "require_hooked", "tl_major"]


def tl_major() -> int:
    """The installed TransformerLens major version (3 or 4)."""
    return int(version("transformer-lens").split(".")[0])


@functools.cache
def hooked_available() -> bool:
    """True where ``transformer_lens.HookedTransformer`` exists (TransformerLens 3.x; 4.x removed it)."""
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


def require_hooked(what: str) -> None:
    """A clear error for a feature that needs ``HookedTransformer`` on a TransformerLens without it."""
    if not hooked_available():
        raise ModelUnavailableError(
            f"{what} needs TransformerLens' HookedTransformer, which TransformerLens "
            f"{version('transformer-lens')} removed; use backend='bridge' or install transformer-lens<4")


def backend_of(model: Any) -> str:
    """``"bridge"`` for a ``TransformerBridge``, else ``"hooked"``."""
    return "bridge" if any(c.__name__ == "TransformerBridge" for c in type(model).__mro__) else "hooked"


def _route_cache_kwarg(bridge) -> None:
    """Make the bridge's attention find the KV cache under the name transformers passes it.

    transformers >= 5.2x hands the cache to attention modules as ``cache=``; TransformerLens'
    attention bridges (3.9 and 4.3) read ``past_key_values=`` / ``layer_past=`` only, so a
    cached decode step would attend to itself alone (measured: logits off by 0.7 on a tiny
    Llama). Each attention bridge instance gets a wrapper that copies ``cache`` over; the
    class is untouched.
    """
    try:
        from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
    except ImportError:  # pragma: no cover - layout of a future TransformerLens
        return
    for module in bridge.modules():
        if isinstance(module, AttentionBridge) and hasattr(module, "_update_kv_cache"):
            original = module._update_kv_cache

            def update(k, v, _original=original, **kwargs):
                if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
                    kwargs["past_key_values"] = kwargs["cache"]
                return _original(k, v, **kwargs)

            module._update_kv_cache = update


def boot_bridge(hf_model, tokenizer, model_id: str, processing: dict[str, bool], device: str):
    """Wrap a loaded HF causal LM as a ``TransformerBridge`` in compatibility mode.

    ``processing`` holds :class:`~mechvalue.lm.models.WeightProcessing`'s flags; all false keeps
    the checkpoint's weights untouched (``no_processing=True``).
    """
    from transformer_lens.model_bridge import TransformerBridge

    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    try:
        bridge = TransformerBridge.boot_transformers(model_id, hf_model=hf_model, tokenizer=tokenizer,
                                                     device=device)
    except (ValueError, NotImplementedError, KeyError) as exc:
        arch = hf_model.config.architectures[0]
        raise ModelUnavailableError(f"TransformerBridge does not support architecture {arch} ({model_id}): {exc}") \
            from exc
    if any(processing.values()):
        bridge.enable_compatibility_mode(disable_warnings=True, **processing)
    else:
        bridge.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    _route_cache_kwarg(bridge)
    return bridge.eval()


def forward(model, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"],
            **kwargs) -> Float[Tensor, "batch pos vocab"] | None:
    """One forward pass with an explicit attention mask (never inferred from pad-token ids)."""
    return model(tokens, attention_mask=attention_mask, **kwargs)


class Decoder:
    """Incremental decoding of one left-padded batch on either backend, with or without a KV cache.

    ``prefill(tokens, mask)`` runs the prompt and returns the last position's logits ``[batch, vocab]``;
    ``step(next_tokens)`` appends one token per row and returns the new last logits. Without a
    cache every step re-runs the whole sequence (the reference the cached path is tested against).
    On ``HookedTransformer`` the cached path uses :func:`~mechvalue.lm.fast_attention.fast_attention`
    unless ``fused=False`` or :func:`~mechvalue.lm.fast_attention.fast_attention_blocker` objects at
    ``prefill`` (then TransformerLens' own attention, for the whole generation; ``self.fused`` says
    which), and computes logits at the last position only.
    """

    def _hooked_last(self, tokens: Int[Tensor, "batch pos"],
                     mask: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch vocab"]:
        """The cached hooked forward, unembedding the last position only (``ln_final``, ``unembed`` see it alone)."""
        model = self.model
        with fast_attention(model) if self.fused else contextlib.nullcontext():
            resid = forward(model, tokens, mask, past_kv_cache=self.cache, stop_at_layer=model.cfg.n_layers)
        x = resid[:, -1:]
        if model.cfg.normalization_type is not None:
            x = model.ln_final(x)
        logits = model.unembed(x)[:, 0]
        cap = getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0
        return cap * torch.tanh(logits / cap) if cap > 0 else logits

    def __init__(self, model, use_cache: bool = True, fused: bool = True):
        self.model, self.use_cache, self.backend = model, use_cache, backend_of(model)
        self.fused = fused and use_cache
        self.tokens: Tensor | None = None
        self.mask: Tensor | None = None
        self.cache = None

    def prefill(self, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch vocab"]:
        self.tokens, self.mask = tokens, mask
        if not self.use_cache:
            return forward(self.model, tokens, mask)[:, -1]
        if self.backend == "hooked":
            from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

            self.cache = TransformerLensKeyValueCache.init_cache(self.model.cfg, tokens.device, tokens.shape[0])
            self.fused = self.fused and fast_attention_blocker(self.model) is None
            return self._hooked_last(tokens, mask)
        logits, self.cache = forward(self.model, tokens, mask, use_cache=True, return_type="logits_and_cache")
        return logits[:, -1]

    def step(self, nxt: Int[Tensor, " batch"]) -> Float[Tensor, "batch vocab"]:
        ones = torch.ones(nxt.shape[0], 1, dtype=self.mask.dtype, device=self.mask.device)
        if self.use_cache and self.backend == "hooked":  # the TL cache keeps its own mask: nothing to grow
            return self._hooked_last(nxt[:, None], ones)
        self.mask = torch.cat([self.mask, ones], 1)
        if not self.use_cache:
            self.tokens = torch.cat([self.tokens, nxt[:, None]], 1)
            return forward(self.model, self.tokens, self.mask)[:, -1]
        with warnings.catch_warnings():  # transformers >= 5.2x renames it `cache` (older ones know only this)
            warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated", category=FutureWarning)
            logits, self.cache = forward(self.model, nxt[:, None], self.mask, past_key_values=self.cache,
                                         use_cache=True, return_type="logits_and_cache")
        return logits[:, -1]


def logits_at(model, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"], rows: Tensor,
              cols: Tensor) -> Float[Tensor, "k vocab"]:
    """Logits only at positions ``(rows[i], cols[i])``. Installed hooks apply.

    On ``HookedTransformer`` the unembedding (a fifth of a small model's FLOPs, and a
    ``[batch, pos, vocab]`` tensor) is skipped elsewhere. On the bridge the full logits are
    indexed: the HF head may do more than ``unembed(ln_final(x))`` (Gemma-2's logit soft-capping).
    """
    if backend_of(model) == "bridge":
        return forward(model, tokens, attention_mask)[rows, cols]
    grabbed = {}

    def grab(act, hook):
        grabbed["x"] = act
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"  # after every installed edit of that hook
    model.run_with_hooks(tokens, attention_mask=attention_mask, return_type=None, fwd_hooks=[(last, grab)])
    x = grabbed["x"][rows, cols][None]  # [1, k, d_model]
    return model.unembed(model.ln_final(x))[0]
