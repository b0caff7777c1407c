"""The fused cached attention: a pure function checked against the textbook formula, and its guard rails."""

from __future__ import annotations

import pytest
import torch

from mechvalue.interventions.install import intervene
from mechvalue.interventions.specs import Lambda
from mechvalue.lm.backends import Decoder, backend_of
from mechvalue.lm.fast_attention import attend, fast_attention, fast_attention_blocker


def _naive(q, k, v, visible, scale):
    rep = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(rep, 2), v.repeat_interleave(rep, 2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    pattern = torch.softmax(scores.masked_fill(~visible, float("-inf")), -1).nan_to_num(0.0)
    return torch.einsum("bhqk,bkhd->bqhd", pattern, v)


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_attend_equals_masked_softmax_attention_with_grouped_heads_and_left_padding(kv_heads):
    g = torch.Generator().manual_seed(0)
    b, t, h, d = 3, 6, 4, 8
    q, k, v = (torch.randn(b, t, n, d, generator=g) for n in (h, kv_heads, kv_heads))
    causal = torch.ones(t, t, dtype=torch.bool).tril()[None, None]
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, :2] = 0  # left padding: rows 0-1 of example 1 see no key
    mask[2, :5] = 0
    visible = causal & mask.bool()[:, None, None, :]
    z = attend(q, k, v, causal, mask, 0.3)
    assert torch.allclose(z, _naive(q, k, v, visible, 0.3), atol=1e-6)
    assert z[1, :2].abs().max() == 0 and z[2, :5].abs().max() == 0


def test_attend_one_new_query_over_a_cache():
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(2, 1, 4, 8, generator=g), torch.randn(2, 5, 2, 8, generator=g), torch.randn(2, 5, 2, 8,
                                                                                                       generator=g)
    causal = torch.ones(1, 5, dtype=torch.bool)[None, None]
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    visible = causal & mask.bool()[:, None, None, :]
    assert torch.allclose(attend(q, k, v, causal, mask, 0.5), _naive(q, k, v, visible, 0.5), atol=1e-6)


def _decode(model, tokens, mask, fused, steps=3):
    d = Decoder(model, fused=fused)
    out = [d.prefill(tokens, mask)]
    for _ in range(steps):
        out.append(d.step(out[-1].argmax(-1)))
    return torch.stack(out), d.fused


@pytest.fixture
def hooked_tiny(tiny_model):
    if backend_of(tiny_model) != "hooked":
        pytest.skip("the fused attention is HookedTransformer's")
    return tiny_model


def _batch():
    tokens = torch.randint(5, 200, (2, 7), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, :3] = 0
    return tokens, mask


def test_hook_z_fires_on_the_fused_path_and_a_pattern_hook_forces_the_reference(hooked_tiny):
    tokens, mask = _batch()
    seen = []
    z_hook = Lambda("blocks.1.attn.hook_z", lambda act, hook: seen.append(act.shape) or act * 0.5)
    with torch.no_grad(), intervene(hooked_tiny, z_hook):
        fused, used = _decode(hooked_tiny, tokens, mask, True)
        ref, _ = _decode(hooked_tiny, tokens, mask, False)
    assert used and seen[0] == (2, 7, hooked_tiny.cfg.n_heads, hooked_tiny.cfg.d_head)
    assert (fused - ref).abs().max() < 1e-4
    pattern_hook = Lambda("blocks.0.attn.hook_pattern", lambda act, hook: act)
    with torch.no_grad(), intervene(hooked_tiny, pattern_hook):
        assert "hook_pattern" in fast_attention_blocker(hooked_tiny)
        _, used = _decode(hooked_tiny, tokens, mask, True)
    assert not used and fast_attention_blocker(hooked_tiny) is None


def test_fast_attention_is_undone_even_on_error(hooked_tiny):
    before = [type(b.attn).forward for b in hooked_tiny.blocks]
    with pytest.raises(ZeroDivisionError), fast_attention(hooked_tiny):
        assert "forward" in vars(hooked_tiny.blocks[0].attn)
        raise ZeroDivisionError
    assert all("forward" not in vars(b.attn) for b in hooked_tiny.blocks)
    assert [type(b.attn).forward for b in hooked_tiny.blocks] == before


def test_the_fused_forward_refuses_an_uncached_call(hooked_tiny):
    tokens, mask = _batch()
    with pytest.raises(RuntimeError, match="KV-cached decoding only"), fast_attention(hooked_tiny):
        hooked_tiny(tokens, attention_mask=mask)
