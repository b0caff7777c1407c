"""The architecture matrix: every supported family, on every backend this TransformerLens has.

For each family a tiny random-weight model (2 layers, d_model 64, built with ``AutoConfig.for_model``,
no hub) is saved as a local Hugging Face folder with the SmolLM2 tokenizer. On each backend:
``load_model(folder)`` logits equal HF's (fp32, 1e-4); ``collect``'s residual means equal HF's
``hidden_states``; ``AddVector``, ``ScaleNeurons`` and ``AblateNeurons`` equal the same edit made with a
plain PyTorch hook on the HF model; batched left-padded generation equals row-by-row, with and without
the KV cache. Backend-agnostic: this file runs on TransformerLens 3 and 4 (CI's second stage).
"""

from __future__ import annotations

import pytest
import torch

from mechvalue.core.errors import ModelUnavailableError
from mechvalue.interventions.install import intervene
from mechvalue.interventions.specs import AblateNeurons, AddVector, ScaleNeurons
from mechvalue.lm.backends import hooked_available
from mechvalue.lm.collect import collect
from mechvalue.lm.families import FAMILIES, tiny_config
from mechvalue.lm.generation import generate
from mechvalue.lm.models import load_model, model_info, offline_gguf_path
from mechvalue.lm.prompts import Example, tokenize

TEXTS = ["Hello there, my friend", "Values guide what we do", "a b"]
PROMPTS = ["How should I spend my first paycheck?", "Is honesty important?", "Tell me about rivers and lakes"]


def _backends(family: str) -> list[str]:
    out = ["bridge"]
    if hooked_available() and FAMILIES[family].hooked:
        out.insert(0, "hooked")
    return out


CASES = [(f, b) for f in FAMILIES for b in _backends(f)]


@pytest.fixture(scope="module")
def smol_tokenizer():
    from transformers import AutoTokenizer

    path = offline_gguf_path()
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, smol_tokenizer):
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("arch")
    out = {}
    for family in FAMILIES:
        cfg = tiny_config(family, smol_tokenizer)
        torch.manual_seed(0)
        hf = AutoModelForCausalLM.from_config(cfg)
        out[family] = root / family
        hf.save_pretrained(out[family])
        smol_tokenizer.save_pretrained(out[family])
    return out


@pytest.fixture(scope="module")
def loaded(folders):
    """(family, backend) -> (mechvalue model, HF reference model), loaded once."""
    from transformers import AutoModelForCausalLM

    cache = {}

    def get(family: str, backend: str):
        if (family, backend) not in cache:
            model = load_model(folders[family], device="cpu", backend=backend)
            hf = AutoModelForCausalLM.from_pretrained(folders[family], dtype=torch.float32).eval()
            cache[family, backend] = (model, hf)
        return cache[family, backend]
    return get


def _batch(tok, texts, padding_side="left"):
    return tokenize(tok, [Example(t, raw=True) for t in texts], span="prompt", skip_special=True,
                    padding_side=padding_side)


def _layers(hf):
    return hf.model.layers if hasattr(hf, "model") else hf.transformer.h


def _down_proj(layer):
    return layer.mlp.down_proj if hasattr(layer.mlp, "down_proj") else layer.mlp.c_proj


@pytest.mark.parametrize("family,backend", CASES)
def test_logits_match_hf(loaded, family, backend):
    model, hf = loaded(family, backend)
    assert model_info(model)["backend"] == backend
    side = "right" if FAMILIES[family].absolute_positions else "left"  # HF's GPT-2 ignores left padding
    b = _batch(model.tokenizer, TEXTS, side)
    with torch.no_grad():
        ours = model(b.tokens, attention_mask=b.attention_mask)
        ref = hf(b.tokens, attention_mask=b.attention_mask).logits
    real = b.attention_mask.bool()
    assert (ours - ref)[real].abs().max().item() < 1e-4


@pytest.mark.parametrize("family,backend", CASES)
def test_collect_resid_means_match_hf_hidden_states(loaded, family, backend):
    model, hf = loaded(family, backend)
    stats = collect(model, [Example(t, raw=True) for t in TEXTS], mlp=False, progress=False, batch_size=2)
    b = _batch(model.tokenizer, TEXTS, "right")
    with torch.no_grad():
        hidden = hf(b.tokens, attention_mask=b.attention_mask, output_hidden_states=True).hidden_states
    w = b.read_mask.float() / b.read_mask.float().sum(1, keepdim=True)  # mean over each example's tokens
    for layer in range(model.cfg.n_layers - 1):  # HF's last hidden state is after the final norm
        ref = (hidden[layer + 1] * w[..., None]).sum(1).mean(0)  # then over examples
        assert torch.allclose(stats.resid_mean[stats.layer_pos(layer)], ref, atol=1e-5)


def _hf_edit(hf, kind: str, layer: int, vec, idx):
    """The same edit as a plain PyTorch hook on the HF model (returns the handle)."""
    if kind == "add":
        def add(mod, args, out):
            return (out[0] + vec,) + tuple(out[1:]) if isinstance(out, tuple) else out + vec
        return _layers(hf)[layer].register_forward_hook(add)

    def scale(mod, args):
        x = args[0].clone()
        x[..., idx] = x[..., idx] * (3.0 if kind == "scale" else 0.0)
        return (x,)
    return _down_proj(_layers(hf)[layer]).register_forward_pre_hook(scale)


@pytest.mark.parametrize("kind", ["add", "scale", "ablate"])
@pytest.mark.parametrize("family,backend", CASES)
def test_interventions_equal_a_plain_hf_hook(loaded, family, backend, kind):
    model, hf = loaded(family, backend)
    layer, idx = 0, [1, 5, 17, 40]
    vec = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    spec = {"add": AddVector(layer, vec, 2.0), "scale": ScaleNeurons(layer, idx, 3.0),
            "ablate": AblateNeurons(layer, idx)}[kind]
    b = _batch(model.tokenizer, TEXTS, "right")
    with torch.no_grad():
        base = hf(b.tokens, attention_mask=b.attention_mask).logits
        handle = _hf_edit(hf, kind, layer, 2.0 * vec, idx)
        try:
            ref = hf(b.tokens, attention_mask=b.attention_mask).logits
        finally:
            handle.remove()
        with intervene(model, spec):
            ours = model(b.tokens, attention_mask=b.attention_mask)
    real = b.attention_mask.bool()
    assert (ref - base)[real].abs().max() > 1e-3  # the edit changes something
    assert (ours - ref)[real].abs().max().item() < 1e-4


@pytest.mark.parametrize("family,backend", CASES)
def test_batched_generation_equals_row_by_row_with_and_without_cache(loaded, family, backend):
    model, _ = loaded(family, backend)
    spec = AddVector(1, torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(2)), 0.5,
                     positions="all")
    runs = {(bs, cache): generate(model, PROMPTS, [spec], max_new_tokens=5, batch_size=bs, use_cache=cache,
                                  return_logprobs=True)
            for bs in (1, 3) for cache in (True, False)}
    ref = runs[1, False]
    for key, g in runs.items():
        assert g.tokens == ref.tokens, f"batch_size={key[0]} use_cache={key[1]} differs from row-by-row uncached"
        for a, r in zip(g.logprobs, ref.logprobs):
            assert max(abs(x - y) for x, y in zip(a, r)) < 1e-4


def test_hooked_backend_on_an_unconvertible_family_is_a_clear_error(folders):
    family = next((f for f, fam in FAMILIES.items() if not fam.hooked), None)
    if family is None or not hooked_available():
        pytest.skip("every family converts, or this TransformerLens has no HookedTransformer")
    with pytest.raises(ModelUnavailableError, match="no weight converter"):
        load_model(folders[family], device="cpu", backend="hooked")
    auto = load_model(folders[family], device="cpu")
    assert model_info(auto)["backend"] == "bridge" and "converter" in model_info(auto)["backend_reason"]


def test_unknown_backend_is_a_usage_error():
    from mechvalue.core.errors import UsageError

    with pytest.raises(UsageError, match="backend"):
        load_model("smollm2", backend="vllm")


HOOKED = [f for f, b in CASES if b == "hooked"]


@pytest.mark.parametrize("family", HOOKED)
def test_fused_cached_decoding_equals_transformerlens_attention(loaded, family):
    """The fused attention (``lm.fast_attention``) gives TransformerLens' logits, step by step, left padded."""
    from mechvalue.lm.backends import Decoder
    from mechvalue.lm.fast_attention import fast_attention_blocker

    model, _ = loaded(family, "hooked")
    side = "right" if FAMILIES[family].absolute_positions else "left"
    b = _batch(model.tokenizer, TEXTS, side)
    if side == "right":  # absolute positions: decode from equal-length rows
        b = _batch(model.tokenizer, ["Hello there, my friend", "Values guide what we do"], side)
    spec = AddVector(0, torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(3)), 1.0)
    out = {}
    with torch.no_grad(), intervene(model, spec):
        for fused in (True, False):
            d = Decoder(model, fused=fused)
            logits = [d.prefill(b.tokens, b.attention_mask)]
            for _ in range(4):
                logits.append(d.step(logits[-1].argmax(-1)))
            out[fused] = (torch.stack(logits), d.fused)
    assert out[True][1] == (fast_attention_blocker(model) is None) and not out[False][1]
    assert (out[True][0] - out[False][0]).abs().max().item() < 1e-4
