"""The vectors an export holds: ``{layer: vector}`` from any of our objects, the manifest, :class:`VectorBundle`.

Shared by the safetensors writer (:mod:`mechvalue.export.bundle`) and the llama.cpp GGUF writer
(:mod:`mechvalue.export.gguf`). See :mod:`mechvalue.export.bundle` for the layer convention.
"""

from __future__ import annotations

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

from mechvalue.core.artifacts import file_sha256
from mechvalue.core.errors import MechvalueError
from mechvalue.interventions.specs import AddVector, Spec

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
    from mechvalue.methods.conva import ValueVectors

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
    if isinstance(obj, Spec) or isinstance(obj, Mapping | list | tuple):
        return vectors_from_specs([obj] if isinstance(obj, Spec) else obj)
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

def dataset_hashes(values: Iterable[str] | str | None = None, kinds: Sequence[str] = ("pairs",),
                   root: str | os.PathLike | None = None) -> dict[str, str]:
    """sha256 of the bundled data files used: ``{"pairs/benevolence.jsonl": hex}`` per kind and value."""
    from mechvalue.core.values import canonical_list
    from mechvalue.data.bundled import data_dir

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
    from mechvalue.lm.models import model_info

    info = model_info(model) if model is not None else {}
    out = {"kind": KIND, "model_id": info.get("model_id"), "processing": info.get("processing"),
           "d_model": int(next(iter(vectors.values())).shape[0]), "hook": hook,
           "hooks": [f"blocks.{la}.{hook}" for la in sorted(vectors)], "layers": sorted(int(la) for la in vectors),
           "dataset_hashes": dataset_hashes(values), "gguf_layer_convention": GGUF_CONVENTION}
    if values is not None:
        from mechvalue.core.values import canonical_list

        out["values"] = canonical_list(values)
    out.update({k: v for k, v in dict(meta or {}).items() if k not in _PROTECTED})
    return json.loads(json.dumps(out, default=str))


def prepare_export(vectors, model, hook: str, values, meta) -> tuple[LayerVectors, dict]:
    """Vectors and manifest of an export; ConVA ``ValueVectors`` fill in value, model id and processing."""
    from mechvalue.methods.conva import ValueVectors

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
