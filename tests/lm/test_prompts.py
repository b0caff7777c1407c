"""Prompt formatting, BOS handling and read-span masks, on the real SmolLM2 tokenizer."""

from __future__ import annotations

import importlib
import re

import pytest
import torch

from mechvalue.core.errors import DataError
from mechvalue.lm.prompts import SPANS, Example, chat, encode, iter_batches, prompt_text, raw, tokenize

prompts = importlib.import_module("mechvalue.lm.prompts")

SYSTEM = "You value tradition above all. Answer briefly."

# Mixed lengths on purpose: short/long, with and without a system prompt or response, raw text.
EXAMPLES = [
    chat("Hi.", response="Hello! How can I help?"),
    chat("Plan a three-day trip to Lisbon for a family with two teenagers who love history and food.",
         system=SYSTEM, response="Day one: the castle and Alfama."),
    chat("What should I cook tonight?", response="Try a lentil soup, it is quick."),
    raw("The committee met on a rainy Tuesday to discuss the new budget", response="and agreed on cuts."),
    chat("Is it okay to skip a friend's wedding for a job interview abroad?", system="Be honest.",
         response="It depends on the friendship, but explain early and apologise."),
]


def _special_re(tokenizer) -> re.Pattern:
    return re.compile("|".join(re.escape(t) for t in tokenizer.all_special_tokens))


def _strip_special(tokenizer, text: str) -> str:
    return _special_re(tokenizer).sub("", text)


def _real(batch, i) -> list[int]:
    return batch.tokens[i][batch.attention_mask[i].bool()].tolist()


def _read(batch, i) -> list[int]:
    return batch.tokens[i][batch.read_mask[i]].tolist()


def _system_block(text: str) -> str | None:
    m = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", text, flags=re.S)
    return m.group(1) if m else None


# ----------------------------------------------------------------------------- chat text


def test_intrinsic_uses_template_default_and_prompted_uses_given_system(tokenizer):
    user = "How should I spend my Saturday?"
    intrinsic = prompt_text(tokenizer, chat(user))
    prompted = prompt_text(tokenizer, chat(user, system=SYSTEM))
    default_system = _system_block(intrinsic)
    # the template inserts its own default system prompt when none is given
    assert default_system, intrinsic
    assert default_system != SYSTEM and default_system not in prompted
    assert _system_block(prompted) == SYSTEM
    assert SYSTEM not in intrinsic
    for text in (intrinsic, prompted):
        assert user in text
        assert text.endswith("<|im_start|>assistant\n")
        assert text.count("<|im_start|>user\n") == 1
    # the intrinsic condition equals the template with no system message, nothing else
    assert intrinsic == tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                                      add_generation_prompt=True)


def test_raw_text_has_no_template(tokenizer):
    text = "The river rose quickly after the storm"
    assert prompt_text(tokenizer, raw(text)) == text
    p, r = encode(tokenizer, raw(text))
    assert r == []
    decoded = tokenizer.decode(p)
    assert "user" not in decoded and "assistant" not in decoded and "system" not in decoded
    assert _strip_special(tokenizer, decoded) == text
    # at most the tokenizer's BOS is special; the rest is the plain text's tokens
    special = set(tokenizer.all_special_ids)
    assert sum(t in special for t in p) == int(prompts.prepends_bos(tokenizer))


def test_raw_response_is_a_continuation(tokenizer):
    p, r = encode(tokenizer, raw("The sky is", response="blue today."))
    assert tokenizer.decode(r) == " blue today."
    _, r2 = encode(tokenizer, raw("The sky is", response="\nblue"))
    assert tokenizer.decode(r2) == "\nblue"


# ----------------------------------------------------------------------------- BOS


class _DistinctBosTokenizer:
    """The real tokenizer, but with a BOS (``<|endoftext|>``) distinct from ``<|im_start|>``.

    ``template_bos`` makes the chat template itself start with that BOS.
    """

    def __init__(self, inner, template_bos: bool = False):
        self._inner = inner
        self._bos = inner.convert_tokens_to_ids("<|endoftext|>")
        self._template_bos = template_bos

    def __getattr__(self, name):
        return getattr(self._inner, name)

    @property
    def bos_token_id(self):
        return self._bos

    def __call__(self, text, add_special_tokens=True, **kwargs):
        ids = list(self._inner(text, add_special_tokens=False, **kwargs)["input_ids"])
        return {"input_ids": [self._bos, *ids] if add_special_tokens else ids}

    def apply_chat_template(self, *args, **kwargs):
        text = self._inner.apply_chat_template(*args, **kwargs)
        return ("<|endoftext|>" + text) if self._template_bos else text


def test_raw_text_gets_one_bos_whatever_the_tokenizer_adds(tokenizer):
    """transformers 5.x's SmolLM2 tokenizer adds no BOS (the GGUF flag), earlier ones did: ours always one."""
    p, _ = encode(tokenizer, raw("plain text"))
    assert p[0] == tokenizer.bos_token_id and p.count(tokenizer.bos_token_id) == 1
    assert p[1:] == tokenizer("plain text", add_special_tokens=False)["input_ids"]


def test_no_double_bos_with_real_tokenizer(tokenizer):
    assert prompts.prepends_bos(tokenizer)  # SmolLM2's BOS is <|im_start|>, which the chat template writes
    bos = tokenizer.bos_token_id
    for ex in (chat("Hello"), chat("Hello", system=SYSTEM)):
        text = prompt_text(tokenizer, ex)
        p, _ = encode(tokenizer, ex)
        naive = [bos, *tokenizer(text, add_special_tokens=False)["input_ids"]]
        assert naive[:2] == [bos, bos]  # what prepending BOS blindly would produce
        assert p[0] == bos and p[1] != bos
        assert p == naive[1:]
        assert p.count(bos) == text.count(tokenizer.bos_token)


@pytest.mark.parametrize("template_bos", [False, True])
def test_distinct_bos_added_exactly_once(tokenizer, template_bos):
    tok = _DistinctBosTokenizer(tokenizer, template_bos=template_bos)
    assert prompts.prepends_bos(tok)
    for ex in (chat("Hello"), chat("Hello", system=SYSTEM, response="Hi there."), raw("plain text")):
        p, r = encode(tok, ex)
        assert p[0] == tok.bos_token_id
        assert (p + r).count(tok.bos_token_id) == 1
        assert tok.bos_token_id not in r
        body = tokenizer(prompt_text(tokenizer, ex), add_special_tokens=False)["input_ids"]
        assert p[1:] == body


def test_no_bos_added_when_tokenizer_does_not_add_one(tokenizer, monkeypatch):
    monkeypatch.setattr(prompts, "prepends_bos", lambda tok: False)
    text = "Just some words"
    p, _ = encode(tokenizer, raw(text))
    assert p == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.bos_token_id not in p
    # the chat template's own <|im_start|> stays exactly as the template wrote it
    ex = chat("Hello")
    p, _ = encode(tokenizer, ex)
    assert p == tokenizer(prompt_text(tokenizer, ex), add_special_tokens=False)["input_ids"]


# ----------------------------------------------------------------------------- read spans


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_spans_land_on_the_right_tokens(tokenizer, padding_side):
    lengths = [sum(map(len, encode(tokenizer, ex))) for ex in EXAMPLES]
    assert len(set(lengths)) == len(lengths)  # genuinely mixed lengths
    batches = {span: tokenize(tokenizer, EXAMPLES, span, padding_side=padding_side) for span in SPANS}
    width = max(lengths)
    for i, ex in enumerate(EXAMPLES):
        p, r = encode(tokenizer, ex)
        for batch in batches.values():
            assert batch.tokens.shape == (len(EXAMPLES), width)
            assert _real(batch, i) == p + r
            n = len(p) + len(r)
            # padding sits on the requested side, real tokens are contiguous
            real_pos = batch.attention_mask[i].nonzero().flatten().tolist()
            start = 0 if padding_side == "right" else width - n
            assert real_pos == list(range(start, start + n))
            assert not (batch.read_mask[i] & ~batch.attention_mask[i].bool()).any()  # never reads padding
            assert batch.prompt_mask[i].sum().item() == len(p)
            assert _real(batch, i)[: len(p)] == batch.tokens[i][batch.prompt_mask[i]].tolist()

        prompt_str = prompt_text(tokenizer, ex)
        assert tokenizer.decode(_read(batches["prompt"], i)) == _strip_special(tokenizer, prompt_str)

        last = _read(batches["last"], i)
        assert last == [p[-1]]
        assert tokenizer.decode(last) == ("\n" if not ex.raw else tokenizer.decode(p[-1:]))
        pos = batches["last"].last_read[i].item()
        real_before = batches["last"].tokens[i, : pos + 1][batches["last"].attention_mask[i, : pos + 1].bool()]
        if ex.raw:
            assert tokenizer.decode(real_before.tolist()).endswith(ex.user)
        else:
            assert tokenizer.decode(real_before.tolist()).endswith("<|im_start|>assistant\n")

        resp = tokenizer.decode(_read(batches["response"], i))
        assert resp == (" " + ex.response if ex.raw else ex.response)

        full = tokenizer.decode(p + r)
        assert tokenizer.decode(_read(batches["all"], i)) == _strip_special(tokenizer, full)
        assert batches["all"].last_read[i].item() == (width - 1 if padding_side == "left" else len(p) + len(r) - 1)


def test_right_and_left_padding_agree(tokenizer):
    for span in SPANS:
        right = tokenize(tokenizer, EXAMPLES, span, padding_side="right")
        left = tokenize(tokenizer, EXAMPLES, span, padding_side="left")
        assert right.padding_side == "right" and left.padding_side == "left"
        for i in range(len(EXAMPLES)):
            assert _real(right, i) == _real(left, i)
            assert _read(right, i) == _read(left, i)
            r_read = right.read_mask[i][right.attention_mask[i].bool()]
            l_read = left.read_mask[i][left.attention_mask[i].bool()]
            assert torch.equal(r_read, l_read)
        assert torch.equal(right.index, left.index)


def test_skip_special_false_reads_special_tokens(tokenizer):
    ex = [chat("Hello", response="Hi.")]
    kept = tokenize(tokenizer, ex, "prompt", skip_special=False)
    skipped = tokenize(tokenizer, ex, "prompt")
    p, _ = encode(tokenizer, ex[0])
    assert _read(kept, 0) == p
    n_special = sum(t in set(tokenizer.all_special_ids) for t in p)
    assert n_special > 0
    assert len(_read(skipped, 0)) == len(p) - n_special
    # "last" is never dropped, special or not
    assert tokenize(tokenizer, ex, "last").read_mask.sum().item() == 1


def test_max_length_truncates_prompt_from_the_left(tokenizer):
    ex = chat("Tell me about the history of the printing press in Europe.", response="It began in Mainz.")
    p, r = encode(tokenizer, ex)
    batch = tokenize(tokenizer, [ex], "all", max_length=len(r) + 5)
    assert _real(batch, 0) == p[-5:] + r
    last = tokenize(tokenizer, [ex], "last", max_length=len(r) + 5)
    assert _read(last, 0) == [p[-1]]


def test_index_maps_sorted_batches_back(tokenizer):
    # descending length, so sorting by length must reorder the rows
    examples = sorted(EXAMPLES, key=lambda e: -len(e.user + (e.system or "") + (e.response or "")))
    batches = list(iter_batches(tokenizer, examples, batch_size=2, span="response", sort_by_length=True))
    assert [b.tokens.shape[0] for b in batches] == [2, 2, 1]
    seen = []
    for batch in batches:
        for row, idx in enumerate(batch.index.tolist()):
            p, r = encode(tokenizer, examples[idx])
            assert _real(batch, row) == p + r
            assert _read(batch, row) == [t for t in r if t not in set(tokenizer.all_special_ids)]
            seen.append(idx)
    assert sorted(seen) == list(range(len(examples)))
    assert seen != list(range(len(examples)))  # order was changed ...
    tok_len = [sum(len(part) for part in encode(tokenizer, examples[i])) for i in seen]
    assert tok_len == sorted(tok_len)  # ... to ascending token length


def test_token_budget_caps_rows_times_width(tokenizer):
    examples = list(EXAMPLES) * 3
    batches = list(iter_batches(tokenizer, examples, batch_size=16, span="all", max_tokens=120))
    assert all(b.tokens.shape[0] * b.tokens.shape[1] <= 120 or b.tokens.shape[0] == 1 for b in batches)
    assert sorted(i for b in batches for i in b.index.tolist()) == list(range(len(examples)))
    with pytest.raises(DataError):
        next(iter_batches(tokenizer, examples, max_tokens=0))
    unsorted = list(iter_batches(tokenizer, examples, batch_size=2, sort_by_length=False))
    assert torch.cat([b.index for b in unsorted]).tolist() == list(range(len(examples)))


def test_tokenbatch_to_keeps_everything(tokenizer):
    batch = tokenize(tokenizer, EXAMPLES[:2], "prompt", padding_side="left")
    moved = batch.to("cpu")
    for name in ("tokens", "attention_mask", "read_mask", "prompt_mask", "index"):
        assert torch.equal(getattr(moved, name), getattr(batch, name))
    assert moved.padding_side == "left"


# ----------------------------------------------------------------------------- errors


def test_errors(tokenizer):
    with pytest.raises(DataError, match="empty"):
        tokenize(tokenizer, [], "prompt")
    with pytest.raises(DataError, match="empty"):
        list(iter_batches(tokenizer, [], 4))
    with pytest.raises(DataError, match="span"):
        tokenize(tokenizer, [chat("hi")], "middle")
    with pytest.raises(DataError, match="padding_side"):
        tokenize(tokenizer, [chat("hi")], "prompt", padding_side="top")
    with pytest.raises(DataError, match="batch_size"):
        list(iter_batches(tokenizer, [chat("hi")], 0))
    with pytest.raises(DataError, match="example 1"):
        tokenize(tokenizer, [chat("hi"), "not an example"], "prompt")
    # a row with nothing to read: no response for span="response" (missing or empty)
    with pytest.raises(DataError, match=r"example 1 .*response"):
        tokenize(tokenizer, [chat("hi", response="yo"), chat("no reply")], "response")
    with pytest.raises(DataError, match="example 0"):
        tokenize(tokenizer, [chat("hi", response="")], "response")
    # raw empty text: only the BOS, which is special and skipped
    with pytest.raises(DataError, match="no tokens to read"):
        tokenize(tokenizer, [raw("")], "prompt")


def test_example_is_immutable():
    ex = Example(user="x")
    with pytest.raises(AttributeError):
        ex.user = "y"  # type: ignore[misc]
