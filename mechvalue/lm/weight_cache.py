"""The on-disk cache of converted ``HookedTransformer`` weights (safetensors + config + tokenizer + meta).

Keyed by the source file's hash, weight processing, dtype and the TransformerLens / transformers versions;
``meta.json`` is written last, so its presence marks a complete entry; a broken entry is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mechvalue.core.artifacts import atomic_path, package_versions, write_json_atomic

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

_CACHE_LAYOUT = 1


def default_cache_dir() -> Path:
    """Where converted weights are cached (``$MECHVALUE_CACHE`` or the user cache dir)."""
    env = os.environ.get("MECHVALUE_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mechvalue"))


def cache_key(source_hash: str, processing: dict[str, bool], dtype: torch.dtype) -> str:
    versions = package_versions()
    blob = json.dumps({"src": source_hash, "proc": processing, "dtype": str(dtype),
                       "tl": versions["transformer-lens"], "hf": versions["transformers"],
                       "layout": _CACHE_LAYOUT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cfg_to_json(cfg: HookedTransformerConfig) -> dict[str, Any]:
    out = {}
    for k, v in cfg.to_dict().items():
        if isinstance(v, torch.dtype):
            v = str(v).removeprefix("torch.")
        elif isinstance(v, torch.device):
            v = str(v)
        try:
            json.dumps(v)
        except TypeError:
            continue
        out[k] = v
    return out


def save_cache(folder: Path, model: HookedTransformer, tokenizer, meta: dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder / "tokenizer")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / "weights.safetensors") as tmp:
        save_file(state, str(tmp))
    write_json_atomic(folder / "config.json", cfg_to_json(model.cfg))
    write_json_atomic(folder / "meta.json", meta)  # written last: its presence marks a complete cache


def load_cache(folder: Path, device: str, dtype: torch.dtype) -> HookedTransformer | None:
    if not (folder / "meta.json").exists():
        return None
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    try:
        cfg_dict = json.loads((folder / "config.json").read_text())
        cfg_dict["dtype"] = dtype
        cfg_dict["device"] = device
        cfg_dict.pop("n_params", None)
        cfg = HookedTransformerConfig.from_dict(cfg_dict)
        tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
        model = HookedTransformer(cfg, tokenizer, move_to_device=False, default_padding_side="left")
        model.load_state_dict(load_file(str(folder / "weights.safetensors")), strict=True)
        model.mechvalue_info = json.loads((folder / "meta.json").read_text())
    except Exception:  # a stale or broken cache is rebuilt, never trusted
        return None
    return model.to(device)
