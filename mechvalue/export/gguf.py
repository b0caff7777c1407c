"""llama.cpp control vectors (GGUF): write, read and detect them; :mod:`mechvalue.export` re-exports these.

Layout follows repeng's ``ControlVector.export_gguf``: architecture ``"controlvector"``, keys
``controlvector.model_hint`` and ``controlvector.layer_count``, one 1-D float32 tensor
``direction.{layer}`` per layer, plus a ``mechvalue.manifest`` JSON string. See :mod:`mechvalue.export.bundle`
for the layer convention (``direction.{l}`` is added after block ``l``; layer 0 is never steered).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mechvalue.core.artifacts import atomic_path, package_versions
from mechvalue.core.errors import CorruptFileError, UsageError
from mechvalue.export.vectors import VectorBundle, prepare_export

if TYPE_CHECKING:
    from mechvalue.export.vectors import LayerVectors

ARCH = "controlvector"
GGUF_MAGIC = b"GGUF"
DIRECTION_NAME = re.compile(r"^direction\.(\d+)$")


def model_hint(model=None) -> str:
    """HF ``model_type``-style hint for ``controlvector.model_hint`` (``LlamaForCausalLM`` -> ``llama``)."""
    arch = getattr(getattr(model, "cfg", None), "original_architecture", None) if model is not None else None
    if not arch:
        return "unknown"
    return re.sub(r"(ForCausalLM|LMHeadModel|Model)$", "", arch).lower() or "unknown"


def export_gguf(path: str | os.PathLike, vectors, *, model=None, hint: str | None = None,
                values: Iterable[str] | str | None = None, meta: Mapping | None = None) -> Path:
    """Write a llama.cpp control vector (repeng's layout) atomically; returns the path.

    ``vectors``: anything :func:`as_layer_vectors` accepts (at ``hook_resid_post``, layer >= 1).
    """
    import gguf


    vecs, man = prepare_export(vectors, model, "hook_resid_post", values, meta)
    if 0 in vecs:
        raise UsageError("llama.cpp never steers layer 0 (it rejects direction.0): drop layer 0 or export "
                             "to safetensors")
    man["versions"] = package_versions()
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        writer.add_string(f"{ARCH}.model_hint", hint or model_hint(model))
        writer.add_uint32(f"{ARCH}.layer_count", len(vecs))
        writer.add_string("mechvalue.manifest", json.dumps(man, sort_keys=True))
        for layer, v in vecs.items():
            writer.add_tensor(f"direction.{layer}", v.numpy().astype(np.float32, copy=False))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def _field(reader, key: str):
    f = reader.get_field(key)
    return None if f is None else f.contents()


def read_control_vector_gguf(path: str | os.PathLike) -> VectorBundle:
    """Read a control-vector GGUF (ours, repeng's or llama.cpp's generator) with its model hint and manifest."""
    import gguf


    path = Path(path)
    if not path.exists():
        raise CorruptFileError(f"{path}: no such file")
    try:
        reader = gguf.GGUFReader(str(path))
        arch = _field(reader, "general.architecture")
        hint = _field(reader, f"{ARCH}.model_hint")
        raw_manifest = _field(reader, "mechvalue.manifest")
        tensors = [(t.name, t.tensor_type, list(t.shape), np.array(t.data, dtype=np.float32, copy=True))
                   for t in reader.tensors]
    except (ValueError, OSError, IndexError, KeyError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise CorruptFileError(f"{path}: not a readable GGUF file ({exc})") from exc
    if arch != ARCH:
        raise CorruptFileError(f"{path}: a GGUF of architecture {arch!r}, not a control vector ({ARCH!r})")
    vectors = {}
    for name, ttype, shape, data in tensors:
        m = DIRECTION_NAME.match(name)
        if m is None:
            raise CorruptFileError(f"{path}: tensor {name!r} is not named direction.<layer>")
        if int(ttype) != int(gguf.GGMLQuantizationType.F32) or len(shape) != 1:
            raise CorruptFileError(f"{path}: {name} must be a 1-D float32 tensor (llama.cpp's requirement)")
        vectors[int(m.group(1))] = torch.from_numpy(data.reshape(-1))
    if not vectors:
        raise CorruptFileError(f"{path}: control vector without direction tensors")
    if 0 in vectors:
        raise CorruptFileError(f"{path}: has direction.0, which llama.cpp rejects (layer 0 is never steered)")
    if len({v.shape[0] for v in vectors.values()}) != 1:
        raise CorruptFileError(f"{path}: direction tensors of different widths")
    try:
        meta = json.loads(raw_manifest) if raw_manifest else {}
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{path}: mechvalue.manifest is not valid JSON ({exc})") from exc
    meta = {**meta, "model_hint": hint, "format": "gguf"}
    return VectorBundle(dict(sorted(vectors.items())), "hook_resid_post", meta)


def load_control_vector_gguf(path: str | os.PathLike) -> LayerVectors:
    """Float32 ``{layer: [d_model]}`` of a control vector GGUF (``direction.{l}`` at ``blocks.{l}.hook_resid_post``)."""
    return read_control_vector_gguf(path).vectors


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False
