"""The model families mechvalue supports: one table, read by ``mechvalue models``, the tests and the docs.

Each :class:`Family` says which Hugging Face ``model_type`` it is, whether TransformerLens 3's
``HookedTransformer`` converts it (else it loads as a ``TransformerBridge``), the seed papers'
models of that family and the layers they steer, where the papers give them
(``docs/methods.md``: ConVA's windows; ValueLocate's "around layer 15" of 28-42-layer models).
:func:`tiny_config` builds a small random config of a family (no hub) for the architecture tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mechvalue.core.errors import UsageError

#: hook points every method needs (``blocks.{l}.`` prefix); neurons need ``mlp.hook_post``
REQUIRED_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "mlp.hook_post", "hook_mlp_out",
                  "hook_attn_out", "attn.hook_z")


@dataclass(frozen=True)
class Family:
    """One architecture family.

    Attributes:
        model_type: the Hugging Face ``config.model_type``.
        architecture: the HF causal-LM class name.
        hooked: TransformerLens 3's ``HookedTransformer`` has a converter (else: bridge only).
        absolute_positions: learned absolute position embeddings (HF does not shift them for left padding).
        seed_models: models of this family the seed papers use.
        layers: the papers' steering layers for those models, as text ("" where they give none).
    """

    model_type: str
    architecture: str
    hooked: bool
    absolute_positions: bool = False
    seed_models: tuple[str, ...] = ()
    layers: str = ""


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", "LlamaForCausalLM", True,
                    seed_models=("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-2-7b-chat-hf",
                                 "HuggingFaceTB/SmolLM2-135M-Instruct"),
                    layers="ConVA: 10-25 of 32 (Llama-2-7b-chat, Llama-3-8B-Instruct); ValueLocate: around 15"),
    "qwen2": Family("qwen2", "Qwen2ForCausalLM", True, seed_models=("Qwen/Qwen2.5-7B-Instruct",),
                    layers="ConVA: 8-23 of 28 (Qwen2.5-7B-Instruct); ValueLocate: around 15"),
    "qwen3": Family("qwen3", "Qwen3ForCausalLM", True),
    "mistral": Family("mistral", "MistralForCausalLM", True, seed_models=("mistralai/Mistral-7B-Instruct-v0.3",)),
    "gemma2": Family("gemma2", "Gemma2ForCausalLM", False, seed_models=("google/gemma-2-9b-it",),
                     layers="ValueLocate: around 15 of 42"),
    "gemma3": Family("gemma3_text", "Gemma3ForCausalLM", False),
    "phi3": Family("phi3", "Phi3ForCausalLM", True),
    "olmo2": Family("olmo2", "Olmo2ForCausalLM", False),
    "gpt2": Family("gpt2", "GPT2LMHeadModel", True, absolute_positions=True),
}


def family_of(config: Any) -> str | None:
    """The :data:`FAMILIES` key of an HF config (or ``model_type`` string), None if unsupported."""
    model_type = config if isinstance(config, str) else getattr(config, "model_type", None)
    return next((k for k, f in FAMILIES.items() if f.model_type == model_type), None)


def tiny_config(family: str, tokenizer, *, n_layers: int = 2, d_model: int = 64, d_mlp: int = 128,
                init_range: float = 0.2):
    """A small random HF config of ``family`` sharing ``tokenizer``'s vocabulary (no hub access).

    ``init_range`` is larger than HF's 0.02 so greedy generation has clear winners (tests compare tokens).
    """
    from transformers import AutoConfig

    if family not in FAMILIES:
        raise UsageError(f"unknown family {family!r}; supported: {', '.join(FAMILIES)}")
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id, vocab_size=len(tokenizer), initializer_range=init_range)
    if family == "gpt2":
        return AutoConfig.for_model("gpt2", n_layer=n_layers, n_embd=d_model, n_head=4, n_inner=d_mlp,
                                    n_positions=512, **ids)
    extra = {"head_dim": d_model // 4} if family in ("qwen3", "gemma2", "gemma3") else {}
    if family in ("gemma2", "gemma3"):
        extra["query_pre_attn_scalar"] = d_model // 4
    return AutoConfig.for_model(FAMILIES[family].model_type, num_hidden_layers=n_layers, hidden_size=d_model,
                                num_attention_heads=4, num_key_value_heads=2, intermediate_size=d_mlp,
                                max_position_embeddings=512, **extra, **ids)


def support_table() -> list[dict[str, str]]:
    """One row per family: the backend it loads with on the installed TransformerLens (by the table; `mechvalue
    models` probes it), seed models, papers' layers."""
    from mechvalue.lm.backends import hooked_available, tl_major

    rows = []
    for key, fam in FAMILIES.items():
        backend = "hooked" if fam.hooked and hooked_available() else "bridge"
        rows.append({"family": key, "architecture": fam.architecture, "backend (auto)": backend,
                     "backends": "hooked, bridge" if fam.hooked and hooked_available() else "bridge",
                     "seed models": ", ".join(fam.seed_models) or "-",
                     "papers' layers": fam.layers or "-", "transformer-lens": str(tl_major())})
    return rows


def probe_family(family: str, tokenizer, folder) -> dict[str, Any]:
    """Build a tiny random model of ``family`` in ``folder``, load it as ``load_model(folder)`` would
    (backend ``auto``) and report the backend it got and which of :data:`REQUIRED_HOOKS` it has (layer 0)."""
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM

    from mechvalue.lm.models import load_model, model_info

    folder = Path(folder)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_config(family, tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model = load_model(folder, device="cpu")
    missing = [h for h in REQUIRED_HOOKS if f"blocks.0.{h}" not in model.hook_dict]
    return {"backend": model_info(model)["backend"], "missing_hooks": missing}
