"""Exporting value vectors: safetensors bundles with a manifest (:mod:`.bundle`) and llama.cpp control-vector
GGUF files (:mod:`.gguf`); :mod:`.vectors` holds what both write.
"""

from mechvalue.export.bundle import (
    export,
    export_safetensors,
    load_bundle,
    load_safetensors_bundle,
    load_specs,
    load_vectors_file,
)
from mechvalue.export.gguf import (
    ARCH,
    GGUF_MAGIC,
    export_gguf,
    load_control_vector_gguf,
    model_hint,
    read_control_vector_gguf,
)
from mechvalue.export.vectors import (
    GGUF_CONVENTION,
    KIND,
    LayerVectors,
    VectorBundle,
    as_layer_vectors,
    dataset_hashes,
    file_sha256,
    manifest,
    to_specs,
    vectors_from_conva,
    vectors_from_specs,
    vectors_from_tensor,
)

__all__ = ["ARCH", "GGUF_CONVENTION", "GGUF_MAGIC", "KIND", "LayerVectors", "VectorBundle", "as_layer_vectors",
           "dataset_hashes", "export", "export_gguf", "export_safetensors", "file_sha256", "load_bundle",
           "load_control_vector_gguf", "load_safetensors_bundle", "load_specs", "load_vectors_file",
           "manifest", "model_hint", "read_control_vector_gguf", "to_specs", "vectors_from_conva",
           "vectors_from_specs", "vectors_from_tensor"]
