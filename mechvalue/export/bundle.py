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

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from mechvalue.core.artifacts import load_tensors, package_versions, save_tensors, write_json_atomic
from mechvalue.core.errors import CorruptFileError, MechvalueError
from mechvalue.export.gguf import DIRECTION_NAME, export_gguf, is_gguf, read_control_vector_gguf
from mechvalue.export.vectors import KIND, VectorBundle, prepare_export
from mechvalue.interventions.specs import AddVector

# ------------------------------------------------------------------ safetensors bundle

def export_safetensors(path: str | os.PathLike, vectors, *, model=None, hook: str = "hook_resid_post",
                       values: Iterable[str] | str | None = None, meta: Mapping | None = None,
                       sidecar: bool = True) -> Path:
    """Write ``direction.{layer}`` tensors with the manifest in the header (and ``FILE.json`` if ``sidecar``)."""
    if hook not in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post"):
        raise MechvalueError(f"hook must be a residual hook (hook_resid_pre/mid/post), not {hook!r}")
    vecs, man = prepare_export(vectors, model, hook, values, meta)
    path = save_tensors(path, {f"direction.{la}": v for la, v in vecs.items()}, man)
    if sidecar:
        write_json_atomic(path.with_name(path.name + ".json"), {**man, "versions": package_versions()})
    return path


def load_safetensors_bundle(path: str | os.PathLike) -> VectorBundle:
    tensors, meta = load_tensors(path, kind=KIND)
    vectors = {}
    for name, t in tensors.items():
        m = DIRECTION_NAME.match(name)
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
    gguf_file = is_gguf(path) or path.suffix.lower() == ".gguf"
    return read_control_vector_gguf(path) if gguf_file else load_safetensors_bundle(path)


def load_specs(path: str | os.PathLike, alpha: float = 1.0, **kwargs) -> list[AddVector]:
    """An exported file as ``AddVector`` specs (``alpha`` times each stored vector)."""
    return load_bundle(path).specs(alpha, **kwargs)


def load_vectors_file(path: str | os.PathLike):
    """A ``ValueVectors`` file (from ``mechvalue extract``) or an export, by content."""
    from mechvalue.methods.conva import ValueVectors

    path = Path(path)
    if not path.exists():
        raise CorruptFileError(f"{path}: no such file")
    if is_gguf(path):
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
