"""Export value vectors for other tools, and import them back as ``AddVector`` specs.

Two formats:

- **llama.cpp control vectors** (GGUF), following repeng's ``ControlVector.export_gguf``:
  architecture ``"controlvector"``, keys ``controlvector.model_hint`` (the HF
  ``model_type``, e.g. ``"llama"``) and ``controlvector.layer_count``, one 1-D float32
  tensor ``direction.{layer}`` per layer (plus a ``mechvalue.manifest`` JSON string, which
  llama.cpp ignores). Use with ``llama-cli --control-vector-scaled FILE SCALE``.
- **safetensors bundle**: tensors ``direction.{layer}`` and a JSON manifest (model id,
  weight processing, hooks, layers, dataset hashes, versions) in the safetensors header,
  also written beside it as ``FILE.json`` for reading without mechvalue.

Layer convention (GGUF): ``direction.{l}`` is added to the output of transformer block
``l`` (0-based), i.e. TransformerLens ``blocks.{l}.hook_resid_post`` = HF
``model.layers[l]``'s output = HF ``hidden_states[l + 1]``. llama.cpp adds the tensor for
``il`` after layer ``il``'s feed-forward residual (``cvec.apply_to(ctx0, cur, il)``,
named ``l_out``) and rejects ``direction.0`` (layer 0 is never steered; its buffer starts
at layer 1); repeng reads the direction for layer ``l`` from ``hidden_states[l + 1]`` and
steers ``model.layers[l]``'s output. So the index is kept as is; a vector at
``blocks.{l}.hook_resid_pre`` is the same edit as one at ``blocks.{l-1}.hook_resid_post``
and is exported as ``direction.{l-1}``; layer 0's output cannot be exported to GGUF.

The vectors are fixed additions (``alpha`` folded in): ConVA's per-prompt closed-form push
and gates cannot be expressed in llama.cpp; :func:`vectors_from_conva` exports the unit
probe directions times a chosen scale.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ._io import load_tensors, package_versions, save_tensors, write_json_atomic
from .errors import CorruptFileError, MechvalueError
from .export_gguf import (
    _NAME,
    ARCH,
    GGUF_MAGIC,
    _is_gguf,
    export_gguf,
    load_control_vector_gguf,
    model_hint,
    read_control_vector_gguf,
)
from .interventions import AddVector, _Spec

# the GGUF reader and writer live in export_gguf; their names stay importable from here
__all__ = ["ARCH", "GGUF_CONVENTION", "GGUF_MAGIC", "KIND", "LayerVectors", "VectorBundle", "as_layer_vectors",
           "dataset_hashes", "export", "export_gguf", "export_safetensors", "file_sha256", "load_bundle",
           "load_control_vector_gguf", "load_safetensors_bundle", "load_specs", "load_vectors_file", "manifest",
           "model_hint", "read_control_vector_gguf", "to_specs", "vectors_from_conva", "vectors_from_specs",
           "vectors_from_tensor"]

KIND = "ValueVectorBundle"
LayerVectors = dict[int, Float[Tensor, " d_model"]]
_PROTECTED = ("kind", "d_model", "hook", "hooks", "layers")  # manifest keys ``meta`` cannot override
GGUF_CONVENTION = ("direction.{l} is added to the output of block l (TransformerLens blocks.{l}.hook_resid_post, "
                   "HF model.layers[l] output, hidden_states[l+1]); llama.cpp never steers layer 0")


@dataclass(frozen=True)
class VectorBundle:
    """Per-layer vectors added at ``blocks.{layer}.{hook}``, with the manifest they were saved with."""

    vectors: LayerVectors
    hook: str = "hook_resid_post"
    meta: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted(self.vectors)

    def specs(self, alpha: float = 1.0, *, layers: Sequence[int] | None = None, positions="all",
              gate=None) -> list[AddVector]:
        """``AddVector`` specs (one per layer, ``alpha`` times the stored vector) for ``intervene``."""
        return to_specs(self.vectors, alpha, layers=layers, hook=self.hook, positions=positions, gate=gate)


# ------------------------------------------------------------------ our objects -> {layer: vector}

def _check_vectors(vectors: Mapping[int, Tensor]) -> LayerVectors:
    """Validate ``{layer: [d_model]}``: int layers >= 0, 1-D finite tensors of one width; float32 copies."""
    if not vectors:
        raise MechvalueError("no vectors to export (empty)")
    out, width = {}, None
    for layer, v in sorted(vectors.items()):
        if isinstance(layer, bool) or not isinstance(layer, int | np.integer) or layer < 0:
            raise MechvalueError(f"layer keys must be integers >= 0, got {layer!r}")
        t = torch.as_tensor(v).detach().to("cpu", torch.float32)
        if t.ndim != 1:
            raise MechvalueError(f"vector of layer {layer} has shape {tuple(t.shape)}, expected [d_model]")
        if width is not None and t.shape[0] != width:
            raise MechvalueError(f"vector of layer {layer} has width {t.shape[0]}, the others {width}")
        if not torch.isfinite(t).all():
            raise MechvalueError(f"vector of layer {layer} has NaN or infinite entries")
        width = t.shape[0]
        out[int(layer)] = t.contiguous()
    return out


def vectors_from_conva(vectors, *, layers: Sequence[int] | None = None, scale: float = 1.0,
                       source: str = "probe") -> LayerVectors:
    """ConVA ``ValueVectors`` as ``{layer: [d_model]}``.

    ``source="probe"``: unit probe directions ``w / |w|`` times ``scale`` (the value's
    direction; ConVA's per-prompt push size is not a constant); ``"mean_diff"``: CAA's mean
    last-token difference times ``scale``. ``layers`` default: the selected layers.
    """
    layers = list(layers) if layers is not None else list(vectors.selected)
    if not layers:
        raise MechvalueError(f"{vectors.value}: no selected layers (no probe above the accuracy threshold); "
                             "pass layers explicitly")
    missing = [la for la in layers if la not in vectors.layers]
    if missing:
        raise MechvalueError(f"{vectors.value}: no probe for layers {missing}; probed layers: {vectors.layers}")
    if source == "probe":
        return _check_vectors({la: vectors.direction(la) * scale for la in layers})
    if source == "mean_diff":
        return _check_vectors({la: vectors.mean_diff[vectors.layers.index(la)] * scale for la in layers})
    raise MechvalueError(f"source must be 'probe' or 'mean_diff', not {source!r}")


def vectors_from_specs(specs: Iterable[AddVector] | Mapping[Any, AddVector]) -> LayerVectors:
    """Fixed ``AddVector`` specs as ``{layer: alpha * vector}`` at ``hook_resid_post`` (same-layer specs add up).

    A spec at ``blocks.{l}.hook_resid_pre`` is the same edit as at ``blocks.{l-1}.hook_resid_post``
    and is moved there. Per-row alphas, gates and position restrictions cannot be exported.
    """
    items = list(specs.values()) if isinstance(specs, Mapping) else list(specs)
    out: dict[int, Tensor] = {}
    for s in items:
        if not isinstance(s, AddVector):
            kind = type(s).__name__
            raise MechvalueError(f"only AddVector specs can be exported as vectors, not {kind}"
                                 + (" (ConVA's push is per prompt: use vectors_from_conva)" if kind == "PerBatch"
                                    else ""))
        alpha = torch.as_tensor(s.alpha, dtype=torch.float32)
        if alpha.ndim != 0:
            raise MechvalueError(f"AddVector at layer {s.layer} has a per-row alpha; export needs one number")
        if s.gate is not None or not (isinstance(s.positions, str) and s.positions == "all"):
            raise MechvalueError(f"AddVector at layer {s.layer} is gated or restricted to positions; an exported "
                                 "vector applies everywhere: drop gate/positions first")
        if s.hook == "hook_resid_post":
            layer = s.layer
        elif s.hook == "hook_resid_pre" and s.layer > 0:
            layer = s.layer - 1
        else:
            raise MechvalueError(f"cannot export an AddVector at blocks.{s.layer}.{s.hook}: only hook_resid_post "
                                 "(or hook_resid_pre of layers >= 1) has a llama.cpp equivalent")
        v = alpha * torch.as_tensor(s.vector).detach().to("cpu", torch.float32)
        out[layer] = out[layer] + v if layer in out else v
    return _check_vectors(out)


def vectors_from_tensor(t: Float[Tensor, "layer d_model"] | Float[Tensor, " d_model"],
                        layers: Sequence[int] | int | None = None) -> LayerVectors:
    """A ``[layer, d_model]`` tensor (row i -> ``layers[i]``, default 0..n-1), or one ``[d_model]`` at ``layers``."""
    t = torch.as_tensor(t)
    if t.ndim == 1:
        if layers is None:
            raise MechvalueError("a single [d_model] vector needs layers= (one or more layer indices)")
        layers = [layers] if isinstance(layers, int) else list(layers)
        return _check_vectors({la: t for la in layers})
    if t.ndim != 2:
        raise MechvalueError(f"expected a [layer, d_model] tensor, got shape {tuple(t.shape)}")
    layers = list(range(t.shape[0])) if layers is None else ([layers] if isinstance(layers, int) else list(layers))
    if len(layers) != t.shape[0]:
        raise MechvalueError(f"{t.shape[0]} rows but {len(layers)} layers")
    return _check_vectors({la: t[i] for i, la in enumerate(layers)})


def as_layer_vectors(obj, **kwargs) -> LayerVectors:
    """Dispatch: ``ValueVectors``, a :class:`VectorBundle`, ``AddVector`` specs, ``{layer: vector}`` or a tensor."""
    from .methods.conva import ValueVectors

    if isinstance(obj, ValueVectors):
        return vectors_from_conva(obj, **kwargs)
    if isinstance(obj, VectorBundle):
        if obj.hook != "hook_resid_post":
            return vectors_from_specs(obj.specs())
        return _check_vectors(obj.vectors)
    if isinstance(obj, Tensor | np.ndarray):
        return vectors_from_tensor(torch.as_tensor(obj), **kwargs)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor | np.ndarray) for v in obj.values()):
        return _check_vectors(obj)
    if isinstance(obj, _Spec) or isinstance(obj, Mapping | list | tuple):
        return vectors_from_specs([obj] if isinstance(obj, _Spec) else obj)
    raise MechvalueError(f"cannot turn a {type(obj).__name__} into per-layer vectors")


def to_specs(vectors: Mapping[int, Tensor], alpha: float = 1.0, *, layers: Sequence[int] | None = None,
             hook: str = "hook_resid_post", positions="all", gate=None) -> list[AddVector]:
    """``AddVector(layer, vector, alpha)`` per layer (optionally only ``layers``), ready for ``intervene``."""
    keep = sorted(vectors) if layers is None else list(layers)
    missing = [la for la in keep if la not in vectors]
    if missing:
        raise MechvalueError(f"no vector for layers {missing}; available: {sorted(vectors)}")
    return [AddVector(la, vectors[la], alpha, hook=hook, positions=positions, gate=gate) for la in keep]


# ------------------------------------------------------------------ manifest

def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_hashes(values: Iterable[str] | str | None = None, kinds: Sequence[str] = ("pairs",),
                   root: str | os.PathLike | None = None) -> dict[str, str]:
    """sha256 of the bundled data files used: ``{"pairs/benevolence.jsonl": hex}`` per kind and value."""
    from .data import data_dir
    from .values import canonical_list

    if values is None:
        return {}
    base = Path(root) if root is not None else data_dir()
    out = {}
    for kind in kinds:
        for v in canonical_list(values):
            path = base / kind / f"{v}.jsonl"
            if not path.exists():
                raise MechvalueError(f"{path}: no such data file to hash")
            out[f"{kind}/{v}.jsonl"] = file_sha256(path)
    return out


def manifest(vectors: Mapping[int, Tensor], *, model=None, hook: str = "hook_resid_post",
             values: Iterable[str] | str | None = None, meta: Mapping | None = None) -> dict:
    """The JSON manifest of an export: model, processing, hooks, layers, dataset hashes, convention."""
    from .models import model_info

    info = model_info(model) if model is not None else {}
    out = {"kind": KIND, "model_id": info.get("model_id"), "processing": info.get("processing"),
           "d_model": int(next(iter(vectors.values())).shape[0]), "hook": hook,
           "hooks": [f"blocks.{la}.{hook}" for la in sorted(vectors)], "layers": sorted(int(la) for la in vectors),
           "dataset_hashes": dataset_hashes(values), "gguf_layer_convention": GGUF_CONVENTION}
    if values is not None:
        from .values import canonical_list

        out["values"] = canonical_list(values)
    out.update({k: v for k, v in dict(meta or {}).items() if k not in _PROTECTED})
    return json.loads(json.dumps(out, default=str))


def _prepare(vectors, model, hook: str, values, meta) -> tuple[LayerVectors, dict]:
    """Vectors and manifest of an export; ConVA ``ValueVectors`` fill in value, model id and processing."""
    from .methods.conva import ValueVectors

    extra = {}
    if isinstance(vectors, ValueVectors):
        values = vectors.value if values is None else values
        extra = {"value": vectors.value, "source": "conva_probe_direction", "scale": 1.0,
                 "model_id": vectors.meta.get("model_id"), "processing": vectors.meta.get("processing")}
    vecs = as_layer_vectors(vectors)
    if model is not None and next(iter(vecs.values())).shape[0] != model.cfg.d_model:
        raise MechvalueError(f"vectors have width {next(iter(vecs.values())).shape[0]} but the model's "
                             f"d_model is {model.cfg.d_model}")
    man = manifest(vecs, model=model, hook=hook, values=values, meta=meta)
    for k, v in extra.items():  # fill only what neither the model nor ``meta`` gave
        if man.get(k) is None:
            man[k] = v
    return vecs, man


# ------------------------------------------------------------------ safetensors bundle

def export_safetensors(path: str | os.PathLike, vectors, *, model=None, hook: str = "hook_resid_post",
                       values: Iterable[str] | str | None = None, meta: Mapping | None = None,
                       sidecar: bool = True) -> Path:
    """Write ``direction.{layer}`` tensors with the manifest in the header (and ``FILE.json`` if ``sidecar``)."""
    if hook not in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post"):
        raise MechvalueError(f"hook must be a residual hook (hook_resid_pre/mid/post), not {hook!r}")
    vecs, man = _prepare(vectors, model, hook, values, meta)
    path = save_tensors(path, {f"direction.{la}": v for la, v in vecs.items()}, man)
    if sidecar:
        write_json_atomic(path.with_name(path.name + ".json"), {**man, "versions": package_versions()})
    return path


def load_safetensors_bundle(path: str | os.PathLike) -> VectorBundle:
    tensors, meta = load_tensors(path, kind=KIND)
    vectors = {}
    for name, t in tensors.items():
        m = _NAME.match(name)
        if m is None:
            raise CorruptFileError(f"{path}: tensor {name!r} is not named direction.<layer>")
        vectors[int(m.group(1))] = t.to(torch.float32)
    if sorted(vectors) != sorted(meta.get("layers", [])):
        raise CorruptFileError(f"{path}: manifest layers {meta.get('layers')} do not match tensors {sorted(vectors)}")
    return VectorBundle(dict(sorted(vectors.items())), meta.get("hook", "hook_resid_post"), meta)


def load_bundle(path: str | os.PathLike) -> VectorBundle:
    """Load an export (GGUF or safetensors, told apart by content) as a :class:`VectorBundle`."""
    path = Path(path)
    if not path.exists():
        raise CorruptFileError(f"{path}: no such file")
    gguf_file = _is_gguf(path) or path.suffix.lower() == ".gguf"
    return read_control_vector_gguf(path) if gguf_file else load_safetensors_bundle(path)


def load_specs(path: str | os.PathLike, alpha: float = 1.0, **kwargs) -> list[AddVector]:
    """An exported file as ``AddVector`` specs (``alpha`` times each stored vector)."""
    return load_bundle(path).specs(alpha, **kwargs)


def load_vectors_file(path: str | os.PathLike):
    """A ``ValueVectors`` file (from ``mechvalue extract``) or an export, by content."""
    from .methods.conva import ValueVectors

    path = Path(path)
    if not path.exists():
        raise CorruptFileError(f"{path}: no such file")
    if _is_gguf(path):
        return read_control_vector_gguf(path)
    _, meta = load_tensors(path)
    if meta.get("kind") == "ConvaVectors":
        return ValueVectors.load(path)
    if meta.get("kind") == KIND:
        return load_safetensors_bundle(path)
    raise CorruptFileError(f"{path}: holds a {meta.get('kind')!r}, expected value vectors (ConvaVectors or {KIND})")


def export(path: str | os.PathLike, vectors, fmt: str | None = None, **kwargs) -> Path:
    """Export to ``fmt`` (``"gguf"`` or ``"safetensors"``; default from the file suffix)."""
    fmt = fmt or ("gguf" if str(path).endswith(".gguf") else "safetensors")
    if fmt == "gguf":
        return export_gguf(path, vectors, **{k: v for k, v in kwargs.items() if k != "hook"})
    if fmt == "safetensors":
        return export_safetensors(path, vectors, **kwargs)
    raise MechvalueError(f"format must be 'gguf' or 'safetensors', not {fmt!r}")
