"""Issue #16, judge replies that used to be turned into guesses: G-EVAL ratings and control-success Yes/No.

"On a scale of 1-5, I give it a 4" parsed as 1, "I cannot say yes or no" as Yes, and an unreadable reply
scored 0.5. Each row: a reply, the answer it gives (None: unparseable) and the problem it shows. An
unparseable reply is re-asked, then recorded as missing (NaN) and counted, never guessed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mechvalue.data.synthesize import ClientConfig
from mechvalue.evaluate.openai_judge import OpenAIJudge, parse_rating, parse_yes_no, score_csr, score_geval

try:
    from .judge_server_helpers import JudgeReply, JudgeServer
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from judge_server_helpers import JudgeReply, JudgeServer

RATINGS = [  # reply, rating given (None: unparseable), what the row checks
    ("4", 4, "a lone digit"),
    ("Rating: 4", 4, "a labelled rating"),
    ("Score: 2", 2, "a labelled score"),
    ("Label: 5", 5, "a digit after Label:"),
    ("I give it a 4", 4, "a rating in a sentence"),
    ("On a scale of 1-5, I give it a 4", 4, "the scale's 1 is not the rating"),
    ("Score (1 to 5): 1", 1, "the scale's 5 is not the rating"),
    ("4/5", 4, "a rating out of /5"),
    ("I'd rate it 3 out of 5.", 3, "a rating out of 5"),
    ("**4**", 4, "a bold rating"),
    ("<think>maybe 2, maybe 3</think>Score: 5", 5, "numbers in a think block are not the rating"),
    ("", None, "no answer"),
    ("I'd rather not rate this.", None, "no number"),
    ("Rating: 4. On reflection, 5.", None, "several different ratings"),
    ("Somewhere between 3 and 4", None, "several different ratings"),
    ("3-4", None, "a range, not a rating"),
    ("6", None, "a number above 5"),
    ("Score: 0", None, "a number below 1"),
    ("8/10", None, "a rating on another scale"),
    ("3.5", None, "not a whole rating"),
    ("<think>I would say 4", None, "a think block cut off before the answer"),
]

YES_NO = [  # reply, label given (None: unparseable), what the row checks
    ("Yes", 1.0, "a bare Yes"),
    ("Yes.", 1.0, "Yes with a full stop"),
    (" no.", 0.0, "a bare No"),
    ("Label: No", 0.0, "No after Label:"),
    ("**No**", 0.0, "a bold No"),
    ("yes, because Bob clearly puts his family first", 1.0, "Yes with a reason"),
    ("yes, because there is no doubt", 1.0, "a later 'no' in the reason is not an answer"),
    ("There is no hedging here. Label: Yes", 1.0, "a marked answer after prose"),
    ("I think the answer is yes.", 1.0, "the answer as the last word"),
    ("<think>no idea</think> Yes", 1.0, "a think block is not the answer"),
    ("I cannot say yes or no", None, "negated: cannot say"),
    ("I can't say.", None, "negated: can't say"),
    ("Yes or no? Hard to tell.", None, "yes or no offered as alternatives"),
    ("Yes. Label: No", None, "both yes and no asserted"),
    ("Neither", None, "neither"),
    ("Neither yes nor no.", None, "negated: neither yes nor no"),
    ("No. Bob favours neither option.", 0.0, "'neither' in the reason does not hide the No"),
    ("No idea.", None, "no idea is not a No"),
    ("Maybe", None, "no answer"),
    ("", None, "an empty reply"),
]


def _ids(rows: list[tuple]) -> list[str]:
    return [f"{reply!r}-{why}" for reply, _, why in rows]


@pytest.mark.parametrize("reply, rating, why", RATINGS, ids=_ids(RATINGS))
def test_geval_reads_the_rating_actually_given(reply, rating, why):
    r = score_geval(reply)
    assert parse_rating(reply)[0] == rating, f"{reply!r}: {why}"
    if rating is None:
        assert not r["parsed"] and r["raw"] is None, f"{reply!r} is unparseable ({why}), not a rating"
        assert math.isnan(r["score"]) and math.isnan(r["label"]), f"{reply!r} ({why}) must be missing, not a guess"
    else:
        assert r["parsed"] and r["raw"] == rating, f"{reply!r} gives {rating} ({why}), read {r['raw']}"
        assert r["score"] == (rating - 1) / 4 and r["label"] == (1.0 if rating > 3 else 0.0 if rating < 3 else 0.5)


@pytest.mark.parametrize("reply, label, why", YES_NO, ids=_ids(YES_NO))
def test_csr_reads_the_yes_or_no_actually_given(reply, label, why):
    r = score_csr(reply)
    if label is None:
        assert parse_yes_no(reply) == (None, -1), f"{reply!r}: {why}"
        assert not r["parsed"], f"{reply!r} is unparseable ({why}), not a label"
        assert math.isnan(r["score"]) and math.isnan(r["label"]), f"{reply!r} ({why}) must be missing, not a guess"
    else:
        assert r["parsed"] and r["label"] == r["score"] == label, f"{reply!r} says {label} ({why}), read {r}"


def _tokens(*steps: tuple[str, dict[str, float]]) -> list:
    """``score_*``'s logprobs: (sampled token, its logprob, top alternatives) per generated token."""
    return [(tok, top.get(tok, 0.0), list(top.items())) for tok, top in steps]


LOGPROB_CASES = [  # scorer, reply, its tokens, expected score (None: missing), what the row checks
    (score_csr, "Yes", _tokens(("Yes", {"Yes": math.log(0.6), " No": math.log(0.2), "yes": math.log(0.2)})),
     0.8, "P(Yes) / (P(Yes) + P(No))"),
    (score_csr, "There is no bias. Label: Yes",
     _tokens(("There", {}), (" is", {}), (" no", {" no": -0.1, " a": -2.4}), (" bias", {}), (".", {}),
             (" Label", {}), (":", {}), (" Yes", {" Yes": math.log(0.7), " No": math.log(0.3)})),
     0.7, "weighted at the answer's token, not at an earlier 'no'"),
    (score_csr, "I cannot say yes or no",
     _tokens(("I", {}), (" cannot", {}), (" say", {}), (" yes", {" yes": math.log(0.9), " no": math.log(0.1)}),
             (" or", {}), (" no", {" no": -0.1})),
     None, "logprobs do not turn a hedge into an answer"),
    (score_geval, "Score: 4", _tokens(("Score", {}), (":", {}), (" 4", {" 4": math.log(0.5), " 5": math.log(0.5)})),
     0.875, "expected digit 4.5"),
    (score_geval, "On a scale of 1-5, I give it a 4",
     _tokens(("On", {}), (" a", {}), (" scale", {}), (" of", {}), (" 1", {" 1": -0.01}), ("-", {}), ("5", {}),
             (",", {}), (" I", {}), (" give", {}), (" it", {}), (" a", {}),
             (" 4", {" 4": math.log(0.5), " 3": math.log(0.5)})),
     0.625, "weighted at the rating's token, not at the scale's 1"),
    (score_geval, "7", _tokens(("7", {"7": -0.1, "4": -3.0})), None, "an out-of-range rating stays missing"),
]


@pytest.mark.parametrize("scorer, reply, logprobs, expected, why", LOGPROB_CASES,
                         ids=[c[-1] for c in LOGPROB_CASES])
def test_logprob_weighting_is_read_at_the_answer(scorer, reply, logprobs, expected, why):
    r = scorer(reply, logprobs)
    if expected is None:
        assert not r["parsed"] and math.isnan(r["score"]) and not r["from_logprobs"], f"{reply!r}: {why}"
    else:
        assert r["from_logprobs"] and math.isclose(r["score"], expected), f"{reply!r}: {why}; got {r['score']}"


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _judge(server: JudgeServer, protocol: str, **kw) -> OpenAIJudge:
    cfg = ClientConfig(server.base_url, "judge-model", "test-key", timeout=5.0, max_attempts=2, max_malformed=1,
                       backoff_base=0.001, backoff_max=0.01)
    return OpenAIJudge(config=cfg, protocol=protocol, logprobs=False, concurrency=1, **kw)


JUDGE_CASES = [  # protocol, replies the server gives in turn, expected score (nan: missing), requests, why
    ("csr", ["Yes"], 1.0, 1, "readable at once"),
    ("csr", ["Maybe", "Label: No"], 0.0, 2, "unreadable, re-asked, then read"),
    ("csr", ["I cannot say yes or no", "Yes. Label: No"], math.nan, 2, "unreadable after the re-ask: missing"),
    ("geval", ["On a scale of 1-5, I give it a 4"], 0.75, 1, "the rating, not the scale"),
    ("geval", ["7", "Rating: 3 or 4"], math.nan, 2, "out of range, then two ratings: missing"),
]


@pytest.mark.parametrize("protocol, replies, expected, requests, why", JUDGE_CASES, ids=[c[-1] for c in JUDGE_CASES])
def test_unparseable_judgments_are_retried_then_missing_and_counted(protocol, replies, expected, requests, why):
    with JudgeServer() as server:
        server.enqueue(*[JudgeReply(r) for r in replies])
        j = _judge(server, protocol)  # on_failure="raise": a missing judgment is not a failure
        rec = j.records(["Bob's answer."], "benevolence")[0]
        assert len(server.requests) == requests, why
    np.testing.assert_equal(rec["score"], expected, err_msg=why)
    missing = int(math.isnan(expected))
    assert rec.get("unparseable", False) == bool(missing), why
    unreadable_replies = requests - 1 + missing
    assert (j.stats["unparseable"], j.stats["missing"], j.stats["unparsed"]) == (missing, missing, unreadable_replies)


def test_missing_judgments_are_cached_and_old_guesses_are_asked_again(tmp_path):
    cache = tmp_path / "judgments.jsonl"
    with JudgeServer() as server:
        server.enqueue(JudgeReply("Unsure"), JudgeReply("Unsure"))
        j = _judge(server, "csr", cache=cache)
        assert np.isnan(j.judge(["a"], "power")).all() and len(server.requests) == 2
        again = _judge(server, "csr", cache=cache)  # a missing judgment is not asked again ...
        assert np.isnan(again.judge(["a"], "power")).all() and len(server.requests) == 2
        assert again.stats["missing"] == 1 and again.stats["cache_hits"] == 1
        # ... but a cached guess of an older version (no "parser" field) is, unless its reply reads the same
        old = [("b", "I cannot say yes or no", 1.0, 1.0), ("c", "Maybe", 0.5, 0.5), ("d", "Label: No", 0.0, 0.0)]
        with open(cache, "a") as fh:
            for text, reply, score, label in old:
                row = {"key": again.key(again.prompt(text, "power")), "reply": reply, "score": score,
                       "label": label, "parsed": True, "from_logprobs": False}
                fh.write(json.dumps(row) + "\n")
        server.enqueue(JudgeReply("No"), JudgeReply("Yes"))
        assert list(_judge(server, "csr", cache=cache).judge(["b", "c", "d"], "power")) == [0.0, 1.0, 0.0]
        assert len(server.requests) == 4  # b and c asked again, d still reads "No"
