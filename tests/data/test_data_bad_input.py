"""Issue #16, bad input that used to pass silently or kill the run: malformed response bodies in dataset
generation, over real HTTP on 127.0.0.1 (tests/fake_openai_server.py, with raw bodies from
tests/judge_server_helpers.py).

An HTTP 200 whose body is not JSON or not a chat completion used to end ``generate_*`` with a
JSONDecodeError (or a TypeError from the reply parser). Each row: the body, and the problem the skipped
request's record must name. The run skips that request, goes on, and reports the count.
"""

from __future__ import annotations

import json
import re
import threading

import pytest

from mechvalue.data import synthesize as gen
from mechvalue.data.bundled import ContrastPair, SystemPrompt, read_jsonl

try:
    from .fake_openai_server import Reply
    from .judge_server_helpers import JudgeReply, JudgeServer
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from fake_openai_server import Reply
    from judge_server_helpers import JudgeReply, JudgeServer

BAD_BODIES = [  # HTTP 200 body, what the skipped request's record says
    pytest.param("{not json", "response body is not JSON: '{not json'", id="truncated-json"),
    pytest.param("", "response body is not JSON: ''", id="empty-body"),
    pytest.param("<html><body>502 Bad Gateway</body></html>", "response body is not JSON: '<html>",
                 id="html-error-page"),
    pytest.param("[1, 2]", "response is not a chat completion", id="json-array"),
    pytest.param("null", "response is not a chat completion", id="json-null"),
    pytest.param('{"id": "x", "object": "chat.completion"}', "response is not a chat completion", id="no-choices"),
    pytest.param('{"choices": []}', "response is not a chat completion", id="empty-choices"),
    pytest.param('{"choices": [{"message": null}]}', "response is not a chat completion", id="null-message"),
    pytest.param('{"choices": [{"message": {"role": "assistant", "content": 5}}]}',
                 "response message content is a int, not text", id="numeric-content"),
    pytest.param('{"choices": [{"message": {"role": "assistant", "content": ["a"]}}]}',
                 "response message content is a list, not text", id="list-content"),
]


def _tag(i: int) -> str:
    """A letters-only word unique to ``i`` (the de-duplication ignores digits)."""
    s, i = "", i + 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(97 + r) + s
    return s


class Fresh:
    """Answers system-prompt and pair prompts with fresh, valid JSON."""

    def __init__(self) -> None:
        self.i, self.lock = 0, threading.Lock()

    def word(self) -> str:
        with self.lock:
            self.i += 1
            return _tag(self.i + 500)

    def __call__(self, body: dict) -> Reply:
        prompt = body["messages"][-1]["content"]
        if '"negative"' in prompt:
            positive = re.search(r"^Aiko .*$", prompt, flags=re.M).group(0)
            return Reply(json.dumps({"negative": positive.replace("helped", "ignored")}))
        k = int(re.search(r"Write (\d+)", prompt).group(1))
        return Reply(json.dumps([f"Aiko helped her neighbour carry the {self.word()} groceries upstairs."
                                 for _ in range(k)]))


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _cfg(server: JudgeServer, **kw) -> gen.ClientConfig:
    base = dict(api_key="test-key", timeout=5.0, max_attempts=2, max_malformed=0, backoff_base=0.001,
                backoff_max=0.01)
    return gen.ClientConfig(server.base_url, "fake-model", **{**base, **kw})


@pytest.mark.parametrize("body, problem", BAD_BODIES)
def test_a_malformed_body_is_skipped_recorded_and_counted(tmp_path, body, problem):
    out = tmp_path / "sys.jsonl"
    with JudgeServer(Fresh()) as server:
        server.enqueue(JudgeReply(raw=body))
        res = gen.generate_system_prompts("power", 4, out, config=_cfg(server), concurrency=1, batch_size=2,
                                          progress=False)
    assert res.complete and res.written == 4, f"the run must go on after a {problem!r} body"
    assert (res.skipped_malformed, res.malformed, res.failed, res.requests) == (1, 1, 1, 3)
    assert len(res.failures) == 1 and problem in res.failures[0], res.failures
    assert res.failures[0].startswith("request skipped after 1 malformed reply")
    assert "1 requests skipped after malformed replies" in res.summary()
    assert len(read_jsonl(out, SystemPrompt)) == 4


@pytest.mark.parametrize("body, problem", BAD_BODIES[:1] + BAD_BODIES[-2:-1])
def test_a_malformed_body_is_re_asked_within_the_budget(tmp_path, body, problem):
    with JudgeServer(Fresh()) as server:
        server.enqueue(JudgeReply(raw=body))
        res = gen.generate_system_prompts("power", 2, tmp_path / "sys.jsonl", config=_cfg(server, max_malformed=1),
                                          concurrency=1, batch_size=2, progress=False)
    assert (res.written, res.malformed, res.skipped_malformed, res.failed, res.requests) == (2, 1, 0, 0, 2), problem


def test_a_malformed_body_in_step_two_of_pairs_skips_that_pair_only(tmp_path):
    fresh = Fresh()

    def respond(body: dict) -> Reply:  # the second request is the first pair's step 2 (its negative)
        return JudgeReply(raw="{not json") if len(server.requests) == 2 else fresh(body)

    out = tmp_path / "pairs.jsonl"
    with JudgeServer(respond) as server:
        res = gen.generate_pairs("power", 3, out, config=_cfg(server), concurrency=1, batch_size=3, progress=False)
    assert res.complete and (res.written, res.skipped_malformed, res.failed) == (3, 1, 1)
    assert "not JSON" in res.failures[0]
    rows = read_jsonl(out, ContrastPair)
    assert [r.id for r in rows] == [f"power-pair-g{i:04d}" for i in range(1, 4)]
    assert all(r.positive != r.negative for r in rows)


def test_the_command_prints_the_count_of_skipped_malformed_responses(tmp_path, capsys):
    out = tmp_path / "sys.jsonl"
    with JudgeServer(Fresh()) as server:  # the command re-asks twice (max_malformed=2): three bad bodies
        server.enqueue(*[JudgeReply(raw="<html>502</html>")] * 3)
        argv = ["system-prompts", "--value", "power", "--n", "2", "--out", str(out), "--base-url", server.base_url,
                "--model", "fake-model", "--no-progress", "--batch-size", "2"]
        assert gen.main(argv) == 0
    printed = capsys.readouterr()
    assert "2 written" in printed.out and "3 malformed replies" in printed.out
    assert "1 requests skipped after malformed replies" in printed.out
    assert "failed: request skipped after 3 malformed replies: response body is not JSON" in printed.err
