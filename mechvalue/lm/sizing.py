"""What a model will cost before it is loaded: parameters, memory, KV cache, time per step of the main job.

:func:`model_config` reads only the configuration (a hub name's ``config.json``, a local folder's, or a
GGUF file's metadata); :func:`estimate` turns it into a :class:`Sizing`. Memory is counted exactly from the
shapes (weights at the load dtype; the KV cache and the largest activation of a forward pass of
``batch x seq`` tokens). Time per step is *scaled*, not measured: the main job's step times recorded on
SmolLM2-135M-Instruct (``data/reference_run.json``: this project's own run on a 2-core CPU) times the ratio of
forward FLOPs per token (2 x parameters). It is a CPU figure; on a GPU it is an upper bound.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mechvalue.core.errors import ModelUnavailableError

_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}


@dataclass(frozen=True)
class Sizing:
    """Sizes in bytes; ``step_seconds`` per main-job step (CPU, scaled from the reference run)."""

    model: str
    architecture: str
    n_params: int
    n_layers: int
    d_model: int
    d_mlp: int
    dtype: str
    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    stats_bytes: int
    step_seconds: dict[str, float]
    reference: str

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes + self.stats_bytes

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_bytes": self.total_bytes}


def _get(cfg, *names, default=None):
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    return default


def dims(cfg) -> tuple[int, int, int, int, int, int]:
    """``(d_model, n_layers, n_heads, n_kv_heads, head_dim, d_mlp)`` of an HF config (GPT-2 or Llama-style names)."""
    d = int(_get(cfg, "hidden_size", "n_embd"))
    n_heads = int(_get(cfg, "num_attention_heads", "n_head"))
    return (d, int(_get(cfg, "num_hidden_layers", "n_layer")), n_heads,
            int(_get(cfg, "num_key_value_heads", default=n_heads)), int(_get(cfg, "head_dim", default=d // n_heads)),
            int(_get(cfg, "intermediate_size", "n_inner", default=4 * d)))


def count_params(cfg) -> int:
    """Parameters of a decoder-only HF config (embeddings, attention with grouped KV heads, gated or plain MLP,
    norms, untied head)."""
    d, n_layers, n_heads, n_kv, head_dim, d_mlp = dims(cfg)
    vocab = int(cfg.vocab_size)
    gated = getattr(cfg, "model_type", "") != "gpt2"
    attn = d * head_dim * (n_heads + 2 * n_kv) + n_heads * head_dim * d
    mlp = (3 if gated else 2) * d * d_mlp
    per_layer = attn + mlp + 2 * d
    emb = vocab * d
    head = 0 if getattr(cfg, "tie_word_embeddings", False) else vocab * d
    pos = int(_get(cfg, "n_positions", default=0)) * d if not gated else 0
    return emb + head + pos + n_layers * per_layer + d


def model_config(name: str | os.PathLike | None):
    """The HF config of a model name, local folder or ``.gguf`` file (nothing but the config is read)."""
    from transformers import AutoConfig

    from mechvalue.lm.offline import is_offline_default, offline_gguf_path

    try:
        if is_offline_default(name):
            path = offline_gguf_path()
            return AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
        if str(name).endswith(".gguf"):
            return AutoConfig.from_pretrained(Path(name).parent, gguf_file=Path(name).name)
        return AutoConfig.from_pretrained(str(name))
    except OSError as exc:
        raise ModelUnavailableError(f"no configuration found for {name!r} (a hub name needs network access or a "
                                    f"populated Hugging Face cache; or pass a local folder): {exc}") from exc


def reference_run() -> dict[str, Any]:
    """The recorded step times the estimates scale from (``data/reference_run.json``)."""
    from mechvalue.data.bundled import data_dir

    return json.loads((data_dir() / "reference_run.json").read_text())


def estimate(cfg, *, name: str = "", dtype: str = "float32", batch_size: int = 16, seq_len: int = 512,
             new_tokens: int = 64) -> Sizing:
    """Memory and time of the main job for config ``cfg`` at ``dtype`` (see the module docstring)."""
    if dtype not in _BYTES:
        raise ModelUnavailableError(f"dtype={dtype!r} is not supported; use one of {sorted(_BYTES)}")
    nbytes = _BYTES[dtype]
    d, n_layers, n_heads, n_kv, head_dim, d_mlp = dims(cfg)
    n_params = count_params(cfg)
    tokens = batch_size * (seq_len + new_tokens)
    kv = 2 * n_layers * n_kv * head_dim * tokens * nbytes
    act = batch_size * seq_len * max(d_mlp * 2, int(cfg.vocab_size)) * max(nbytes, 4)  # MLP or fp32 logits
    stats = 4 * n_layers * (3 * d_mlp + d)  # fp32 accumulators of collect
    ref = reference_run()
    ratio = n_params / ref["n_params"]
    steps = {k: round(v * ratio, 1) for k, v in ref["wall_seconds_per_step"].items()}
    arch = (getattr(cfg, "architectures", None) or [getattr(cfg, "model_type", "?")])[0]
    return Sizing(str(name), arch, n_params, n_layers, d, d_mlp, dtype, n_params * nbytes, kv, act, stats, steps,
                  f"{ref['model']} on {ref['machine']} ({ref['commit']})")


def available_bytes(device: str) -> int | None:
    """Free memory on ``device`` (CUDA: free on that card; CPU: physical memory), None if unknown."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(cfg, name: str, dtype: str, device: str, n_devices: int = 1) -> None:
    """Refuse, before any weight is read, a model whose weights alone exceed the device's memory (summed over
    ``n_devices`` CUDA devices when the layers are spread); the error carries the estimate."""
    s = estimate(cfg, name=name, dtype=dtype)
    free = available_bytes(device)
    if free is not None and n_devices > 1:
        free = sum(available_bytes(f"cuda:{i}") or 0 for i in range(n_devices))
        device = f"{n_devices} CUDA devices"
    if free is not None and s.weights_bytes > free:
        raise ModelUnavailableError(
            f"{name} does not fit on {device}: {s.n_params / 1e9:.3g} B parameters need {gib(s.weights_bytes)} of "
            f"weights in {dtype} (+ {gib(s.kv_cache_bytes)} KV cache, {gib(s.activation_bytes)} activations at "
            f"batch 16 x 512 tokens), {gib(free)} available; use --dtype bfloat16, a GPU (--device cuda), several "
            "(--n-devices N), or see "
            "`mechvalue run --model NAME --dry-run`")


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def describe(s: Sizing) -> list[tuple[str, str]]:
    """Rows for a console table."""
    rows = [("model", s.model), ("architecture", s.architecture), ("parameters", f"{s.n_params / 1e9:.3g} B"),
            ("layers x d_model x d_mlp", f"{s.n_layers} x {s.d_model} x {s.d_mlp}"), ("dtype", s.dtype),
            ("weights", gib(s.weights_bytes)), ("KV cache (batch x (prompt + new tokens))", gib(s.kv_cache_bytes)),
            ("largest activation of a forward", gib(s.activation_bytes)), ("statistics (fp32)", gib(s.stats_bytes)),
            ("total", gib(s.total_bytes))]
    rows += [(f"step {k} (CPU estimate)", f"{v:,.0f} s") for k, v in s.step_seconds.items()]
    rows.append(("time scaled from", s.reference))
    return rows
