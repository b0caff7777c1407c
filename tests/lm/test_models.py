"""Model loading: GGUF -> HookedTransformer agrees with transformers; cache; clear errors."""

from __future__ import annotations

import pytest
import torch

from mechvalue.core.errors import ModelUnavailableError
from mechvalue.lm.models import WeightProcessing, load_model, model_info, offline_gguf_path
from mechvalue.lm.prompts import chat, encode

PROMPTS = ["The capital of France is", "Once upon a time, a small robot", "def add(a, b):\n    return"]


@pytest.fixture(scope="module")
def hf_model():
    from transformers import AutoModelForCausalLM

    path = offline_gguf_path()
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


@pytest.mark.parametrize("processing", ["none", "tl"])
def test_log_softmax_matches_transformers(smollm, hf_model, tmp_path, processing):
    model = smollm if processing == "none" else load_model(processing=processing, cache_dir=tmp_path)
    texts = [*PROMPTS, None]
    for text in texts:
        if text is None:  # a templated chat prompt too
            ids = encode(smollm.tokenizer, chat("Give me one tip for sleeping well."))[0]
        else:
            ids = smollm.tokenizer(text)["input_ids"]
        tokens = torch.tensor([ids])
        with torch.no_grad():
            ours = model(tokens).log_softmax(-1)
            ref = hf_model(tokens).logits.log_softmax(-1)
        assert (ours - ref).abs().max().item() < 1e-3


def test_cache_roundtrip_is_identical(tmp_path):
    first = load_model(cache_dir=tmp_path)
    assert any(tmp_path.rglob("meta.json"))
    second = load_model(cache_dir=tmp_path)
    tokens = torch.tensor([first.tokenizer("Hello there")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(first(tokens), second(tokens))
    assert model_info(second)["source_sha256"] == model_info(first)["source_sha256"]
    assert second.tokenizer.chat_template == first.tokenizer.chat_template


def test_corrupt_cache_is_rebuilt(tmp_path):
    load_model(cache_dir=tmp_path)
    (weights,) = list(tmp_path.rglob("weights.safetensors"))
    weights.write_bytes(b"garbage")
    model = load_model(cache_dir=tmp_path)
    assert model.cfg.n_layers == 30


def test_model_info_records_processing(smollm):
    info = model_info(smollm)
    assert info["model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert info["processing"] == WeightProcessing().to_dict()
    assert (info["n_layers"], info["d_model"], info["d_mlp"]) == (30, 576, 1536)


def test_unknown_model_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="local folder"):
        load_model("nobody/no-such-model-xyz")


def test_missing_gguf_and_bad_options():
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        load_model("/nonexistent/model.gguf")
    with pytest.raises(ModelUnavailableError, match="processing"):
        load_model(processing="sideways")
    with pytest.raises(ModelUnavailableError, match="dtype"):
        load_model(dtype="float8")
