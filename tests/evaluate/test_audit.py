"""Audits: a planted neuron that fires only on one token is found, at that token; summaries; files."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_model

from mechvalue.core.errors import CorruptFileError, HookError, MechvalueError
from mechvalue.evaluate.audit import (
    default_texts,
    direction_activations,
    load_audit,
    mark_max,
    neuron_summary,
    save_audit,
    top_activating,
)

NEURON = 7
WORD = " banana"


@pytest.fixture(scope="module")
def planted(tokenizer):
    """Tiny model whose layer-0 neuron 7 reads residual coordinate 0, which only WORD's embedding sets."""
    ids = tokenizer(WORD, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1
    token = ids[0]
    model = make_tiny_model(tokenizer, seed=5)
    with torch.no_grad():
        model.W_E[:, 0] = 0.0
        model.W_E[token, 0] = 6.0
        model.blocks[0].attn.W_O[:, :, 0] = 0.0  # attention never writes coordinate 0
        model.blocks[0].attn.b_O[0] = 0.0
        for w in (model.blocks[0].mlp.W_gate, model.blocks[0].mlp.W_in):
            w[:, NEURON] = 0.0
            w[0, NEURON] = 3.0
        model.blocks[0].mlp.b_in[NEURON] = 0.0
        model.W_U[:, token] = 0.0
        model.W_U[5, token] = 50.0  # the neuron's W_out row below points at coordinate 5: WORD tops its logit lens
        model.blocks[0].mlp.W_out[NEURON] = 0.0
        model.blocks[0].mlp.W_out[NEURON, 5] = 2.0
    return model, token


TEXTS = ["I ate a banana after lunch.", "The weather is cold today.", "Please pass me that banana, thanks.",
         "We walked along the river.", "A banana a day keeps the doctor busy.", "Numbers go up and down."]


def test_planted_neuron_top_texts_and_position(planted, one_thread):
    model, token = planted
    top = top_activating(model, 0, NEURON, TEXTS, k=3, batch_size=4)
    assert len(top) == 3
    assert all("banana" in ex["text"] for ex in top)
    for ex in top:
        assert ex["tokens"][ex["argmax"]] == WORD and ex["max"] == max(ex["acts"]) > 0
        assert len(ex["tokens"]) == len(ex["acts"])
        assert all(a == 0.0 for j, a in enumerate(ex["acts"]) if ex["tokens"][j] != WORD)  # silent elsewhere
        assert "[[ banana]]" in mark_max(ex)
    assert [ex["max"] for ex in top] == sorted((ex["max"] for ex in top), reverse=True)
    rest = top_activating(model, 0, NEURON, TEXTS, k=6)
    assert [ex["max"] for ex in rest[3:]] == [0.0, 0.0, 0.0]


def test_direction_projection_finds_the_token(planted, one_thread):
    model, _ = planted
    e0 = torch.zeros(model.cfg.d_model)
    e0[0] = 2.0  # any norm: projected on the unit direction
    top = direction_activations(model, "blocks.0.hook_resid_pre", e0, TEXTS, k=2)
    assert all(ex["tokens"][ex["argmax"]] == WORD and ex["max"] == pytest.approx(6.0) for ex in top)
    with pytest.raises(MechvalueError, match="width"):
        direction_activations(model, "blocks.0.hook_resid_pre", torch.ones(3), TEXTS)
    with pytest.raises(MechvalueError, match="non-zero"):
        direction_activations(model, "blocks.0.hook_resid_pre", torch.zeros(model.cfg.d_model), TEXTS)
    with pytest.raises(HookError, match="no hook"):
        direction_activations(model, "blocks.0.hook_resid_postt", e0, TEXTS)


def test_neuron_summary_logit_lens(planted):
    model, token = planted
    s = neuron_summary(model, 0, NEURON, k=10)
    assert s["top_tokens"][0]["id"] == token and s["top_tokens"][0]["token"] == WORD
    assert s["w_out_norm"] == pytest.approx(2.0) and len(s["bottom_tokens"]) == 10
    assert s["bottom_tokens"][0]["logit"] <= s["top_tokens"][-1]["logit"]


def test_bad_neuron_and_default_texts(planted, tiny_model):
    model, _ = planted
    with pytest.raises(HookError, match="does not exist"):
        top_activating(model, 0, model.cfg.d_mlp, TEXTS)
    with pytest.raises(HookError, match="layer 9"):
        top_activating(model, 9, 0, TEXTS)
    with pytest.raises(MechvalueError, match="hook"):
        top_activating(model, 0, 0, TEXTS, hook="mid")
    with pytest.raises(MechvalueError, match="no texts"):
        top_activating(model, 0, 0, ["", "  "])
    texts = default_texts(40, seed=1)
    assert len(texts) == 40 and texts == default_texts(40, seed=1) and len(set(texts)) == 40
    assert len(top_activating(tiny_model, 1, 3, k=2, batch_size=32)) == 2  # default texts


def test_save_and_load_audit(planted, tmp_path):
    model, _ = planted
    top = top_activating(model, 0, NEURON, TEXTS, k=2)
    path = save_audit(tmp_path / "a" / "n.json", "neuron", 0, NEURON, "banana neuron", top)
    obj = json.loads(path.read_text())
    assert obj["kind"] == "neuron" and obj["label"] == "banana neuron" and len(obj["examples"]) == 2
    assert load_audit(path)["examples"][0]["tokens"] == top[0]["tokens"]
    with pytest.raises(MechvalueError, match="kind"):
        save_audit(tmp_path / "x.json", "head", 0, 0, None, top)
    with pytest.raises(MechvalueError, match="lacks"):
        save_audit(tmp_path / "x.json", "neuron", 0, 0, None, [{"text": "a"}])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        load_audit(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"kind": "run"}')
    with pytest.raises(CorruptFileError, match="not an audit"):
        load_audit(tmp_path / "other.json")
