"""Export: GGUF control vectors read back exactly by gguf's reader, safetensors bundles, specs round trip."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch

from mechvalue.core.errors import CorruptFileError, MechvalueError
from mechvalue.export import (
    ARCH,
    VectorBundle,
    as_layer_vectors,
    dataset_hashes,
    export,
    export_gguf,
    export_safetensors,
    load_bundle,
    load_control_vector_gguf,
    load_specs,
    load_vectors_file,
    model_hint,
    vectors_from_conva,
    vectors_from_specs,
    vectors_from_tensor,
)
from mechvalue.interventions.install import AddVector, PerBatch, ScaleNeurons, intervene
from mechvalue.methods.conva import ValueVectors


def _vectors(d=16, layers=(1, 2, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {la: torch.randn(d, generator=g) for la in layers}


def _value_vectors(d=16, n_layers=4, selected=(1, 2)):
    g = torch.Generator().manual_seed(1)
    return ValueVectors("benevolence", list(range(n_layers)), torch.randn(n_layers, d, generator=g) * 3,
                        torch.zeros(n_layers), torch.full((n_layers,), 0.95), torch.randn(n_layers, d, generator=g),
                        list(selected), {"model_id": "tiny-0", "processing": "none"})


def test_gguf_roundtrip_exact_with_gguf_reader(tmp_path):
    vecs = _vectors()
    path = export_gguf(tmp_path / "v.gguf", vecs, hint="llama", values="benevolence")
    reader = gguf.GGUFReader(str(path))
    assert reader.get_field("general.architecture").contents() == ARCH
    assert reader.get_field(f"{ARCH}.model_hint").contents() == "llama"
    assert reader.get_field(f"{ARCH}.layer_count").contents() == 3
    got = {int(t.name.split(".")[1]): np.array(t.data) for t in reader.tensors}
    assert sorted(got) == [1, 2, 5]
    for la, v in vecs.items():
        assert got[la].dtype == np.float32 and np.array_equal(got[la], v.numpy())
    back = load_control_vector_gguf(path)
    assert all(torch.equal(back[la], vecs[la]) for la in vecs)
    bundle = load_bundle(path)
    assert bundle.meta["values"] == ["benevolence"] and "pairs/benevolence.jsonl" in bundle.meta["dataset_hashes"]
    assert bundle.meta["hooks"] == ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post", "blocks.5.hook_resid_post"]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file


def test_safetensors_bundle_roundtrip_and_manifest(tmp_path):
    vecs = _vectors()
    path = export_safetensors(tmp_path / "v.safetensors", vecs, values=["benevolence", "power"],
                              meta={"note": "x", "kind": "other", "layers": [9]})  # core keys are protected
    bundle = load_bundle(path)
    assert bundle.layers == [1, 2, 5] and all(torch.equal(bundle.vectors[la], vecs[la]) for la in vecs)
    assert bundle.meta["kind"] == "ValueVectorBundle" and bundle.meta["note"] == "x"
    assert set(bundle.meta["dataset_hashes"]) == {"pairs/benevolence.jsonl", "pairs/power.jsonl"}
    side = json.loads((tmp_path / "v.safetensors.json").read_text())
    assert side["layers"] == [1, 2, 5] and side["dataset_hashes"] == bundle.meta["dataset_hashes"]
    from safetensors.torch import load_file  # plain safetensors: readable without mechvalue

    assert sorted(load_file(str(path))) == ["direction.1", "direction.2", "direction.5"]


def test_dataset_hashes_are_sha256_of_the_files():
    import hashlib

    from mechvalue.data.bundled import data_dir

    h = dataset_hashes("BE")
    assert h == {"pairs/benevolence.jsonl": hashlib.sha256((data_dir() / "pairs/benevolence.jsonl").read_bytes())
                 .hexdigest()}
    assert dataset_hashes(None) == {}


def test_conva_vectors_unit_directions_scaled(tmp_path):
    vv = _value_vectors()
    d = vectors_from_conva(vv, scale=4.0)
    assert sorted(d) == [1, 2]
    assert torch.allclose(d[1].norm(), torch.tensor(4.0)) and torch.allclose(d[1] / 4, vv.direction(1))
    caa = vectors_from_conva(vv, source="mean_diff", layers=[3])
    assert torch.equal(caa[3], vv.mean_diff[3])
    path = export_gguf(tmp_path / "c.gguf", vv)  # ValueVectors directly: selected layers, unit norm
    bundle = load_bundle(path)
    assert bundle.meta["value"] == "benevolence" and bundle.meta["model_id"] == "tiny-0"
    assert torch.allclose(bundle.vectors[2], vv.direction(2))
    with pytest.raises(MechvalueError, match="no selected layers"):
        vectors_from_conva(_value_vectors(selected=()))
    with pytest.raises(MechvalueError, match="no probe for layers"):
        vectors_from_conva(vv, layers=[9])


def test_specs_to_vectors_and_back():
    v = torch.randn(8)
    d = vectors_from_specs([AddVector(3, v, 2.0), AddVector(3, v, 1.0), AddVector(2, v, 1.0, hook="hook_resid_pre")])
    assert sorted(d) == [1, 3] and torch.allclose(d[3], 3 * v) and torch.allclose(d[1], v)
    with pytest.raises(MechvalueError, match="per-row alpha"):
        vectors_from_specs([AddVector(1, v, torch.ones(2))])
    with pytest.raises(MechvalueError, match="gated"):
        vectors_from_specs([AddVector(1, v, 1.0, gate=torch.ones(2, dtype=torch.bool))])
    with pytest.raises(MechvalueError, match="only AddVector"):
        vectors_from_specs([ScaleNeurons(1, [0], 2.0)])
    with pytest.raises(MechvalueError, match="per prompt"):
        vectors_from_specs([PerBatch(lambda m, e: [])])
    with pytest.raises(MechvalueError, match="hook_resid_mid"):
        vectors_from_specs([AddVector(1, v, 1.0, hook="hook_resid_mid")])
    t = torch.randn(3, 8)
    assert sorted(vectors_from_tensor(t)) == [0, 1, 2]
    assert sorted(vectors_from_tensor(t, layers=[4, 5, 6])) == [4, 5, 6]
    assert sorted(vectors_from_tensor(v, layers=7)) == [7]
    with pytest.raises(MechvalueError, match="needs layers"):
        vectors_from_tensor(v)
    assert sorted(as_layer_vectors({2: v})) == [2]


def test_bad_vectors_are_refused(tmp_path):
    with pytest.raises(MechvalueError, match="layer 0"):
        export_gguf(tmp_path / "z.gguf", {0: torch.ones(4)})
    with pytest.raises(MechvalueError, match="width"):
        export_gguf(tmp_path / "z.gguf", {1: torch.ones(4), 2: torch.ones(5)})
    with pytest.raises(MechvalueError, match="NaN"):
        export_safetensors(tmp_path / "z.safetensors", {1: torch.tensor([float("nan")])})
    with pytest.raises(MechvalueError, match="empty"):
        export_gguf(tmp_path / "z.gguf", {})
    with pytest.raises(MechvalueError, match="format"):
        export(tmp_path / "z.bin", {1: torch.ones(4)}, fmt="onnx")
    assert not list(tmp_path.iterdir())


def test_corrupt_and_wrong_files_give_clear_errors(tmp_path):
    with pytest.raises(CorruptFileError, match="no such file"):
        load_bundle(tmp_path / "missing.gguf")
    good = export_gguf(tmp_path / "v.gguf", _vectors())
    data = good.read_bytes()
    (tmp_path / "trunc.gguf").write_bytes(data[:40])
    with pytest.raises(CorruptFileError, match="not a readable GGUF"):
        load_bundle(tmp_path / "trunc.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"hello, not a gguf at all")
    with pytest.raises(CorruptFileError, match="not a readable GGUF"):
        load_bundle(tmp_path / "junk.gguf")
    (tmp_path / "junk.safetensors").write_bytes(b"hello, not a gguf at all")
    with pytest.raises(CorruptFileError, match="not a readable safetensors"):
        load_bundle(tmp_path / "junk.safetensors")
    w = gguf.GGUFWriter(str(tmp_path / "model.gguf"), "llama")  # a model, not a control vector
    w.add_tensor("blk.0.attn_q.weight", np.ones((2, 2), dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(CorruptFileError, match="architecture 'llama', not a control vector"):
        load_control_vector_gguf(tmp_path / "model.gguf")
    w = gguf.GGUFWriter(str(tmp_path / "f16.gguf"), ARCH)
    w.add_tensor("direction.1", np.ones(4, dtype=np.float16))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(CorruptFileError, match="1-D float32"):
        load_control_vector_gguf(tmp_path / "f16.gguf")
    other = _value_vectors().save(tmp_path / "vv.safetensors")
    with pytest.raises(CorruptFileError, match="expected a 'ValueVectorBundle'"):
        load_bundle(other)
    assert isinstance(load_vectors_file(other), ValueVectors)
    assert isinstance(load_vectors_file(good), VectorBundle)


def test_imported_specs_steer_like_the_originals(tiny_model, tmp_path, one_thread):
    d = tiny_model.cfg.d_model
    assert model_hint(tiny_model) == "unknown"
    specs = [AddVector(1, torch.randn(d), 0.7), AddVector(2, torch.randn(d), -1.3)]
    tokens = tiny_model.to_tokens(["The garden is green"])
    with intervene(tiny_model, specs):
        want = tiny_model(tokens)
    for fmt in ("gguf", "safetensors"):
        path = export(tmp_path / f"s.{fmt}", specs, fmt=fmt, model=tiny_model)
        back = load_specs(path)
        assert [s.layer for s in back] == [1, 2] and all(s.alpha == 1.0 for s in back)
        with intervene(tiny_model, back):
            assert torch.allclose(tiny_model(tokens), want, atol=1e-5)
        assert load_bundle(path).meta["model_id"] == "tiny-0"
        assert len(load_specs(path, 2.0, layers=[2])) == 1
    with pytest.raises(MechvalueError, match="d_model"):
        export_gguf(tmp_path / "w.gguf", {1: torch.ones(d + 1)}, model=tiny_model)


@pytest.mark.model
def test_llama_cpp_applies_direction_l_where_we_add_at_resid_post_l(smollm, tmp_path, one_thread):
    """llama.cpp itself (llama-cpp-python) steers like AddVector at blocks.{l}.hook_resid_post, not l +- 1.

    The file is read the way llama.cpp's ``common_control_vector_load_one`` reads it (layer l's
    vector at offset ``n_embd * (l - 1)``) and handed to ``llama_set_adapter_cvec``.
    """
    llama_cpp = pytest.importorskip("llama_cpp")
    import ctypes

    from mechvalue.lm.models import offline_gguf_path

    n_layer, d, layer = smollm.cfg.n_layers, smollm.cfg.d_model, 10
    v = torch.randn(d, generator=torch.Generator().manual_seed(0))
    path = export_gguf(tmp_path / "v.gguf", {layer: v / v.norm() * 60}, model=smollm)
    ids = smollm.tokenizer("The weather today is", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        base = smollm(torch.tensor([ids]))[0, -1]
        tl = {}
        for la in (layer - 1, layer, layer + 1):
            with intervene(smollm, [AddVector(la, load_control_vector_gguf(path)[layer], 1.0)]):
                tl[la] = (smollm(torch.tensor([ids]))[0, -1] - base).numpy()
    data = np.zeros(d * layer, dtype=np.float32)
    for t in gguf.GGUFReader(str(path)).tensors:
        il = int(t.name.split(".")[1])
        data[d * (il - 1):d * il] += t.data
    llm = llama_cpp.Llama(str(offline_gguf_path()), n_ctx=32, logits_all=True, verbose=False, n_threads=1)
    llm.eval(ids)
    cpp_base = np.array(llm.scores[len(ids) - 1])
    apply = getattr(llama_cpp, "llama_set_adapter_cvec", None) or llama_cpp.llama_apply_adapter_cvec
    assert apply(llm.ctx, (ctypes.c_float * len(data))(*data), len(data), d, 1, n_layer) == 0
    llm.reset()
    llm.eval(ids)
    cpp = np.array(llm.scores[len(ids) - 1]) - cpp_base
    corr = {la: float(np.corrcoef(cpp[:len(x)], x)[0, 1]) for la, x in tl.items()}
    assert corr[layer] > 0.98 and corr[layer] > max(corr[layer - 1], corr[layer + 1]) + 0.05, corr
