"""The hand-off to llama.cpp: an exported control vector steers llama.cpp's greedy text like mechvalue's own.

llama.cpp's ``llama-server --control-vector-scaled FILE S`` loads the file with ``common_control_vector_load``
and hands the buffer to ``llama_set_adapter_cvec``; llama-cpp-python ships that library (not the server
binary), so this test makes the same call on the same GGUF model and decodes greedily in both engines from
the same token ids. llama.cpp multiplies with the file's Q4_1 weights, mechvalue with their fp32
dequantization, so texts may part where two tokens are nearly tied: the test requires identical text, or a
first divergence where mechvalue's own logits put the two candidates within ``TIE`` nats, both unsteered and
steered (and the vector must change llama.cpp's text). It prints the divergence points for the README.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

from mechvalue.export import export_gguf, load_control_vector_gguf
from mechvalue.interventions.install import intervene
from mechvalue.interventions.specs import AddVector
from mechvalue.lm.backends import Decoder

N_NEW, TIE, LAYER, NORM = 24, 1.0, 12, 40.0
PROMPT = "<|im_start|>user\nGive me one tip for a rainy weekend.<|im_end|>\n<|im_start|>assistant\n"


def _ours(model, ids, spec):
    with torch.no_grad(), intervene(model, [spec] if spec else []):
        d = Decoder(model)
        logits = d.prefill(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
        out, all_logits = [], []
        for _ in range(N_NEW):
            all_logits.append(logits[0].clone())
            out.append(int(logits[0].argmax()))
            logits = d.step(torch.tensor([out[-1]]))
    return out, all_logits


def _llama(llm, ids):
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(N_NEW):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([out[-1]])
    return out


def _divergence(a, b, logits):
    """First index where the greedy texts differ and mechvalue's logit gap between the two choices there."""
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return (None, 0.0) if k is None else (k, float(logits[k][a[k]] - logits[k][b[k]]))


@pytest.mark.model
def test_llama_cpp_control_vector_generation_matches_mechvalue(smollm, tmp_path, one_thread):
    llama_cpp = pytest.importorskip("llama_cpp")
    from mechvalue.lm.models import offline_gguf_path

    d, n_layer = smollm.cfg.d_model, smollm.cfg.n_layers
    v = torch.randn(d, generator=torch.Generator().manual_seed(1))
    path = export_gguf(tmp_path / "v.gguf", {LAYER: v / v.norm() * NORM}, model=smollm)
    vec = load_control_vector_gguf(path)[LAYER]
    ids = smollm.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    llm = llama_cpp.Llama(str(offline_gguf_path()), n_ctx=256, logits_all=True, verbose=False, n_threads=1)
    assert llm.tokenize(PROMPT.encode(), add_bos=False, special=True) == ids  # the same token ids in both
    cpp_base = _llama(llm, ids)
    data = np.zeros(d * n_layer, dtype=np.float32)
    data[d * (LAYER - 1):d * LAYER] = vec.numpy()  # common_control_vector_load's layout: layer l at l - 1
    apply = getattr(llama_cpp, "llama_set_adapter_cvec", None) or llama_cpp.llama_apply_adapter_cvec
    assert apply(llm.ctx, (ctypes.c_float * len(data))(*data), len(data), d, 1, n_layer) == 0
    cpp_steer = _llama(llm, ids)
    ours_base, lb = _ours(smollm, ids, None)
    ours_steer, ls = _ours(smollm, ids, AddVector(LAYER, vec, 1.0))
    assert cpp_steer != cpp_base and ours_steer != ours_base  # the vector changes both engines' text
    report = {}
    for name, a, b, logits in (("unsteered", ours_base, cpp_base, lb), ("steered", ours_steer, cpp_steer, ls)):
        k, gap = _divergence(a, b, logits)
        report[name] = (k, round(gap, 3))
        assert k is None or gap < TIE, f"{name}: texts part at token {k} where mechvalue prefers its token by " \
                                       f"{gap:.2f} nats: not a near-tie, so not explained by Q4_1 numerics"
    print(f"\nllama.cpp vs mechvalue greedy, {N_NEW} tokens (first divergence, logit gap): {report}; "
          f"steered texts: {smollm.tokenizer.decode(ours_steer)!r} / {smollm.tokenizer.decode(cpp_steer)!r}")
