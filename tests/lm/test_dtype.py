"""bfloat16 against float32 on the CPU, on both backends: logits, a steered forward, statistics, generation.

Stated tolerances. bf16 keeps 8 bits of mantissa (relative error ~4e-3 per op), so the error grows with the
activations' scale. A tiny random Llama (init std 0.05): log-probabilities within 0.05 nats of fp32, steered
or not; ``collect``'s residual means within 2% of their scale on average. SmolLM2-135M-Instruct (measured
here: logit std 8.0; fp32's top token loses at most 0.17 nats in bf16, 0.03 on average, 98.7% of argmaxes
agree, as a HookedTransformer; at most 0.31, 0.04 on average, 100% agree, as a bridge, whose HF modules round
differently): top-token log-probabilities within 0.4 nats (0.05 on average), >= 95% of argmaxes equal, and the fp32
steered generation scored by the bf16 steered model within 0.05 nats per token on average.
Statistics accumulate in fp32 whatever the model's dtype.
"""

from __future__ import annotations

import pytest
import torch

from mechvalue.interventions.install import intervene
from mechvalue.interventions.specs import AddVector
from mechvalue.lm.backends import hooked_available
from mechvalue.lm.collect import collect
from mechvalue.lm.families import tiny_config
from mechvalue.lm.generation import generate, score
from mechvalue.lm.models import load_model, model_info, offline_gguf_path
from mechvalue.lm.prompts import Example, chat, tokenize

TEXTS = ["Hello there, my friend", "Values guide what we do", "a b"]
BACKENDS = ["hooked", "bridge"] if hooked_available() else ["bridge"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = offline_gguf_path()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    out = tmp_path_factory.mktemp("bf16")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_config("llama", tok, init_range=0.05)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16_tracks_float32(folder, backend):
    fp32 = load_model(folder, device="cpu", backend=backend)
    bf16 = load_model(folder, device="cpu", backend=backend, dtype="bfloat16")
    assert model_info(bf16)["dtype"] == "bfloat16" and next(bf16.parameters()).dtype == torch.bfloat16
    b = tokenize(fp32.tokenizer, [Example(t, raw=True) for t in TEXTS], span="prompt", padding_side="right")
    real = b.attention_mask.bool()
    spec = AddVector(0, torch.randn(fp32.cfg.d_model, generator=torch.Generator().manual_seed(1)), 2.0)
    with torch.no_grad():
        for specs in ((), (spec,)):
            with intervene(fp32, *specs):
                ref = fp32(b.tokens, attention_mask=b.attention_mask).float().log_softmax(-1)
            with intervene(bf16, *specs):
                low = bf16(b.tokens, attention_mask=b.attention_mask).float().log_softmax(-1)
            assert (low - ref)[real].abs().max().item() < 0.05
    s32 = collect(fp32, [Example(t, raw=True) for t in TEXTS], progress=False)
    s16 = collect(bf16, [Example(t, raw=True) for t in TEXTS], progress=False)
    assert s16.resid_mean.dtype == torch.float32 and s16.act_prob.dtype == torch.float32
    scale = s32.resid_mean.abs().mean()
    assert (s16.resid_mean - s32.resid_mean).abs().max() < 0.02 * scale * 10
    assert (s16.resid_mean - s32.resid_mean).abs().mean() < 0.02 * scale
    g32 = generate(fp32, ["Is honesty important?"], [spec], max_new_tokens=4, return_logprobs=True)
    g16 = generate(bf16, ["Is honesty important?"], [spec], max_new_tokens=4, return_logprobs=True)
    assert g16.tokens[0][0] == g32.tokens[0][0]  # the first steered token agrees (later ones may drift)
    assert abs(g16.logprobs[0][0] - g32.logprobs[0][0]) < 0.05


@pytest.mark.model
def test_smollm2_in_bfloat16_within_the_stated_tolerance(smollm):
    bf16 = load_model(device="cpu", dtype="bfloat16")
    assert model_info(bf16)["dtype"] == "bfloat16"
    ex = [chat("How should I spend my first paycheck?"), chat("Is honesty important?"),
          Example("The capital of France is", raw=True)]
    b = tokenize(smollm.tokenizer, ex, span="prompt", padding_side="right", skip_special=False)
    real = b.attention_mask.bool()
    with torch.no_grad():
        ref = smollm(b.tokens, attention_mask=b.attention_mask).float().log_softmax(-1)
        low = bf16(b.tokens, attention_mask=b.attention_mask).float().log_softmax(-1)
    top = ref.argmax(-1, keepdim=True)
    d = (low.gather(-1, top) - ref.gather(-1, top))[..., 0][real].abs()
    assert d.max() < 0.4 and d.mean() < 0.05
    assert (low.argmax(-1) == top[..., 0])[real].float().mean() >= 0.95
    spec = AddVector(15, torch.randn(smollm.cfg.d_model, generator=torch.Generator().manual_seed(0)), 2.0)
    prompts = ["How should I spend my first paycheck?", "Describe your ideal job."]
    texts = generate(smollm, prompts, [spec], max_new_tokens=16).texts
    n_tok = [len(smollm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    s32 = score(smollm, prompts, [[t] for t in texts], [spec])[:, 0]
    s16 = score(bf16, prompts, [[t] for t in texts], [spec])[:, 0]
    assert ((s16 - s32).abs() / torch.tensor(n_tok)).mean() < 0.05
