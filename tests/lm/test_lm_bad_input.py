"""Bad generation/scoring/collection arguments and over-long prompts get a clear error before any forward
pass (issue #16), on the tiny random model (``n_ctx=512``).

Each table case is ``(call, error class, regex on the message)``; every one failed before the checks: a
bare ValueError/TypeError/RuntimeError/ZeroDivisionError/IndexError from inside the loop (after the first
forward passes), or a silently wrong result (``temperature=-1`` ran greedy, ``top_p=1.5`` was ignored,
``limit=-1`` dropped the last MMLU question, a string of continuations was scored letter by letter).
"""

from __future__ import annotations

import pytest

from mechvalue.core.errors import DataError, MechvalueError, UsageError
from mechvalue.data.mmlu import MMLUQuestion
from mechvalue.evaluate.scores import mmlu_accuracy, next_token_distribution, questionnaire
from mechvalue.lm.collect import collect
from mechvalue.lm.generation import generate, score
from mechvalue.lm.prompts import chat, encode, raw

NAN = float("nan")
N_CTX = 512
LONG = " ".join(["bread"] * 600)  # ~600 tokens: more than the tiny model's context
QUESTION = MMLUQuestion("misc", "Which is a fruit?", ("Stone", "Apple", "Iron", "Glass"), 1)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (see conftest.one_thread)."""


@pytest.fixture
def forward_passes(tiny_model):
    """Counts forward passes of the tiny model (a hook on ``hook_embed``) while the test runs."""
    calls = []
    with tiny_model.hooks(fwd_hooks=[("hook_embed", lambda act, hook: calls.append(1))]):
        yield calls


def case(call, error, match, id):
    return pytest.param(call, error, match, id=id)


ARGUMENT_CASES = [
    case(lambda m: generate(m, "hi", batch_size=0), UsageError, r"batch_size must be an integer >= 1, got 0",
         "generate-batch_size-0"),
    case(lambda m: generate(m, "hi", max_new_tokens=2.5), UsageError,
         r"max_new_tokens must be an integer >= 1, got 2\.5", "generate-max_new_tokens-float"),
    case(lambda m: generate(m, "hi", max_new_tokens="8"), UsageError, r"max_new_tokens must be an integer >= 1, "
         r"got '8'", "generate-max_new_tokens-string"),
    case(lambda m: generate(m, "hi", temperature=-1.0), UsageError,
         r"temperature must be a finite number >= 0 \(0 = greedy\), got -1\.0", "generate-temperature-negative"),
    case(lambda m: generate(m, "hi", temperature=NAN), UsageError, r"temperature must be .*got nan",
         "generate-temperature-nan"),
    case(lambda m: generate(m, "hi", temperature=1.0, top_p=0.0), UsageError, r"top_p must be a number in \(0, 1\]"
         r" .*got 0\.0", "generate-top_p-0"),
    case(lambda m: generate(m, "hi", temperature=1.0, top_p=1.5), UsageError, r"top_p .*got 1\.5",
         "generate-top_p-above-1"),
    case(lambda m: generate(m, "hi", temperature=1.0, top_p=NAN), UsageError, r"top_p .*got nan",
         "generate-top_p-nan"),
    case(lambda m: score(m, ["a"], [["x"]], batch_size=0), UsageError, r"batch_size must be an integer >= 1, got 0",
         "score-batch_size-0"),
    case(lambda m: score(m, ["a"], ["yes"]), UsageError, r"continuations\[0\] must be a list of strings, got 'yes'",
         "score-continuations-string"),
    case(lambda m: collect(m, [raw("hi")], batch_size=1.5, progress=False), UsageError,
         r"batch_size must be an integer >= 1, got 1\.5", "collect-batch_size-float"),
    case(lambda m: collect(m, [raw("hi")], max_length=0, progress=False), UsageError,
         r"max_length must be an integer >= 1, got 0", "collect-max_length-0"),
    case(lambda m: collect(m, [raw("hi")], checkpoint="unused.safetensors", checkpoint_every=0, progress=False),
         UsageError, r"checkpoint_every must be an integer >= 1, got 0", "collect-checkpoint_every-0"),
    case(lambda m: next_token_distribution(m, [chat("hi")], ["1", "2"], batch_size=0), UsageError,
         r"batch_size must be an integer >= 1, got 0", "next_token_distribution-batch_size-0"),
    case(lambda m: questionnaire(m, batch_size=-2), UsageError, r"batch_size must be an integer >= 1, got -2",
         "questionnaire-batch_size-negative"),
    case(lambda m: mmlu_accuracy(m, [QUESTION, QUESTION], limit=-1), UsageError,
         r"limit must be an integer >= 1, got -1", "mmlu_accuracy-limit-negative"),
]


@pytest.mark.parametrize(("call", "error", "match"), ARGUMENT_CASES)
def test_bad_arguments_raise_before_any_forward_pass(tiny_model, forward_passes, call, error, match):
    with pytest.raises(error, match=match):
        call(tiny_model)
    assert forward_passes == []


def _prompt_len(tokenizer, example) -> int:
    return len(encode(tokenizer, example)[0])


def test_prompt_longer_than_the_context_is_refused_naming_it(tiny_model, forward_passes):
    cases = [
        (lambda: generate(tiny_model, ["hi", "hello", LONG, "hey"], max_new_tokens=4),
         r"example 2 is \d+ tokens \+ 3 generated tokens fed back \(max_new_tokens - 1\) = \d+, more than the "
         r"model's context of 512 tokens \(model.cfg.n_ctx\)"),
        (lambda: score(tiny_model, ["a", "b"], [["fine"], [LONG]]), r"example 1 is \d+ tokens, more than .* 512"),
        (lambda: collect(tiny_model, [raw("hi"), raw("ok"), raw("yes"), raw(LONG)], progress=False),
         r"example 3 is \d+ tokens, more than the model's context of 512 .*max_length="),
        (lambda: next_token_distribution(tiny_model, [chat(LONG)], ["1", "2"]), r"example 0 is \d+ tokens"),
    ]
    for call, match in cases:
        with pytest.raises(DataError, match=match):
            call()
    assert forward_passes == []  # refused before the short prompts' batches ran


def test_prompt_plus_new_tokens_must_fit(tiny_model, tokenizer):
    """A prompt that fits alone but not with the generated tokens fed back: refused, the sum named. The last
    generated token is never fed back, so ``n + max_new_tokens - 1 == n_ctx`` still fits (and runs)."""
    prompt = chat(" ".join(["bread"] * 470))
    n = _prompt_len(tokenizer, prompt)
    assert N_CTX - 64 < n < N_CTX
    with pytest.raises(DataError, match=rf"example 0 is {n} tokens \+ {N_CTX - n + 1} generated tokens fed back "
                                         rf"\(max_new_tokens - 1\) = {N_CTX + 1}, more than the model's context"):
        generate(tiny_model, [prompt], max_new_tokens=N_CTX - n + 2)
    out = generate(tiny_model, [prompt], max_new_tokens=N_CTX - n + 1, stop=[])
    assert 1 <= len(out.tokens[0]) <= N_CTX - n + 1  # exactly full: runs


def test_max_length_truncation_keeps_long_examples_collectable(tiny_model):
    stats = collect(tiny_model, [raw(LONG)], layers=[0], max_length=64, progress=False)
    assert stats.n_examples == 1


def test_valid_sampling_edges_still_work(tiny_model, forward_passes):
    out = generate(tiny_model, ["hi"], max_new_tokens=2, temperature=0.7, top_p=1.0, seed=1)
    assert len(out.tokens[0]) >= 1 and forward_passes  # (the pass counter does count)
    with pytest.raises(MechvalueError, match="every prompt needs the same number"):
        score(tiny_model, ["a", "b"], [["x"], ["y", "z"]])
