"""Sizing before loading: parameter counts of real configs, memory, the --dry-run command, the fit check."""

from __future__ import annotations

import json

import pytest

from mechvalue.cli.main import main
from mechvalue.core.errors import ModelUnavailableError
from mechvalue.lm.sizing import check_fits, count_params, estimate, model_config

#: published shapes of the models the seeds use (config.json fields), and their published parameter counts
QWEN25_7B = dict(model_type="qwen2", hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False)
LLAMA3_70B = dict(model_type="llama", hidden_size=8192, num_hidden_layers=80, num_attention_heads=64,
                  num_key_value_heads=8, intermediate_size=28672, vocab_size=128256, tie_word_embeddings=False)


def _folder(tmp_path, fields):
    from transformers import AutoConfig

    kind = fields.pop("model_type")
    cfg = AutoConfig.for_model(kind, **fields)
    cfg.architectures = [{"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[kind]]
    cfg.save_pretrained(tmp_path)
    return tmp_path


def test_parameter_counts_match_the_published_ones(tmp_path):
    assert count_params(model_config(None)) == 134_515_008  # SmolLM2-135M-Instruct
    qwen = model_config(_folder(tmp_path / "q", dict(QWEN25_7B)))
    assert abs(count_params(qwen) - 7.62e9) / 7.62e9 < 0.01  # Qwen2.5-7B: 7.61 B
    llama = model_config(_folder(tmp_path / "l", dict(LLAMA3_70B)))
    assert abs(count_params(llama) - 70.6e9) / 70.6e9 < 0.01  # Llama-3-70B: 70.6 B


def test_memory_scales_with_dtype_and_grouped_kv_heads(tmp_path):
    cfg = model_config(_folder(tmp_path, dict(QWEN25_7B)))
    fp32, bf16 = estimate(cfg, dtype="float32"), estimate(cfg, dtype="bfloat16")
    assert fp32.weights_bytes == 2 * bf16.weights_bytes == 4 * fp32.n_params
    # K and V: 2 x 28 layers x 4 KV heads x 128 dims x 16 rows x (512 + 64) tokens x 2 bytes
    assert bf16.kv_cache_bytes == 2 * 28 * 4 * 128 * 16 * 576 * 2
    assert set(bf16.step_seconds) >= {"valuelocate", "conva", "dual"}
    assert bf16.step_seconds["conva"] > 50 * estimate(model_config(None)).step_seconds["conva"]


@pytest.mark.parametrize("which", ["smollm2", "qwen7b", "llama70b"])
def test_dry_run_prints_the_estimate_without_loading(tmp_path, capsys, no_model, which):
    model = {"smollm2": [], "qwen7b": ["--model", str(_folder(tmp_path, dict(QWEN25_7B)))],
             "llama70b": ["--model", str(_folder(tmp_path, dict(LLAMA3_70B)))]}[which]
    assert main(["run", *model, "--dtype", "bfloat16", "--dry-run", "--json", "--out", str(tmp_path / "r")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dtype"] == "bfloat16" and out["weights_bytes"] == 2 * out["n_params"]
    assert not (tmp_path / "r").exists()  # nothing ran
    if which == "llama70b":
        assert out["fits"] is False  # 141 GB of weights on this machine's memory
    assert main(["run", *model, "--dry-run", "--out", str(tmp_path / "r")]) == 0
    text = capsys.readouterr().out
    assert "KV cache" in text and "step conva (CPU estimate)" in text


def test_a_model_that_cannot_fit_is_refused_with_the_estimate(tmp_path):
    cfg = model_config(_folder(tmp_path, dict(LLAMA3_70B)))
    with pytest.raises(ModelUnavailableError, match=r"does not fit on cpu: 70.6 B parameters need 262.8\d GiB"):
        check_fits(cfg, "llama-70b", "float32", "cpu")
    check_fits(model_config(None), "smollm2", "float32", "cpu")  # 135 M fits


def test_n_devices_is_checked_before_anything_loads(monkeypatch):
    import mechvalue.lm.models as models
    from mechvalue.core.errors import UsageError
    from mechvalue.lm.models import check_devices, load_model

    def boom(*a, **k):
        raise AssertionError("nothing may load before n_devices is checked")
    monkeypatch.setattr(models, "_load_hub", boom)

    assert check_devices(1, "cpu") == 1
    for bad in (0, -2, 1.5, True):
        with pytest.raises(UsageError, match="n_devices must be an integer >= 1"):
            check_devices(bad, "cpu")
    with pytest.raises(UsageError, match=r"n_devices=2 spreads the model over 2 CUDA devices, but device is 'cpu'"):
        load_model("some/hub-model", device="cpu", n_devices=2)


def test_n_devices_reaches_the_run_config_and_the_flags():
    from mechvalue.core.errors import UsageError
    from mechvalue.pipeline.config import RunConfig

    assert RunConfig.build(flags={"n_devices": 4}).n_devices == 4
    with pytest.raises(UsageError, match="n_devices must be at least 1"):
        RunConfig.build({"n_devices": 0})
