"""mechvalue.data.synthesize over real HTTP against tests/fake_openai_server.py (loopback only)."""

from __future__ import annotations

import json
import re
import threading

import pytest

from mechvalue.core.errors import MechvalueError
from mechvalue.data import synthesize as gen
from mechvalue.data.bundled import (
    ContrastPair,
    Dilemma,
    PortraitItem,
    Query,
    SystemPrompt,
    load_system_prompts,
    read_jsonl,
)

try:
    from .fake_openai_server import FakeOpenAIServer, Reply
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from fake_openai_server import FakeOpenAIServer, Reply


def _tag(i: int) -> str:
    """A letters-only word unique to ``i`` (the de-duplication ignores digits)."""
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(97 + r) + s
    return s


class Smart:
    """Default responder: answers every generator's prompt with fresh, valid JSON."""

    def fresh(self) -> str:
        with self.lock:
            self.i += 1
            return _tag(self.i + 1000)

    def __init__(self, biased: bool = False) -> None:
        self.i, self.lock, self.biased = 0, threading.Lock(), biased

    def __call__(self, body: dict) -> Reply:
        prompt = body["messages"][-1]["content"]
        if '"negative"' in prompt:
            positive = re.search(r"^Aiko .*$", prompt, flags=re.M).group(0)
            negative = positive.replace("helped", "ignored") if not self.biased else \
                f"Nobody there cared about the {self.fresh()} errand."
            return Reply(json.dumps({"negative": negative}))
        k = int(re.search(r"Write (\d+)", prompt).group(1))
        if "conflict_value" in prompt:
            q = "Should I visit my aunt or finish the {} report?"
            return Reply(json.dumps([{"question": q.format(self.fresh()),
                                      "value_answer": "Visit your aunt.", "conflict_value": "Achievement",
                                      "conflict_answer": "Finish the report."} for _ in range(k)]))
        items = [f"Aiko helped her neighbour carry the {self.fresh()} groceries upstairs." for _ in range(k)]
        return Reply("```json\n" + json.dumps(items) + "\n```")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server():
    with FakeOpenAIServer(Smart()) as s:
        yield s


def _cfg(server: FakeOpenAIServer, **kw) -> gen.ClientConfig:
    base = dict(api_key="test-key", timeout=2.0, max_attempts=3, max_malformed=2, backoff_base=0.001,
                backoff_max=0.02)
    return gen.ClientConfig(server.base_url, "fake-model", **{**base, **kw})


def test_happy_path_pairs(server, tmp_path):
    out = tmp_path / "pairs.jsonl"
    res = gen.generate_pairs("Benevolence", 5, out, config=_cfg(server), concurrency=3, batch_size=2,
                             progress=False)
    assert (res.written, res.skipped, res.failed, res.duplicates, res.retries) == (5, 0, 0, 0, 0)
    assert res.complete and len(server.requests) == res.requests == 3 + 5  # 3 step-1 batches, 5 negatives
    rows = read_jsonl(out, ContrastPair)
    assert [r.id for r in rows] == [f"benevolence-pair-g{i:04d}" for i in range(1, 6)]
    assert all(r.value == "benevolence" and r.split in ("train", "test") for r in rows)
    assert all(r.positive != r.negative for r in rows)
    prompts = [b["messages"][-1]["content"] for b in server.requests]
    step2 = [p for p in prompts if '"negative"' in p]
    assert sorted(p for r in rows for p in step2 if r.positive in p) == sorted(step2)  # each negative matched
    assert all(b["model"] == "fake-model" for b in server.requests)
    assert isinstance(res.context_bias, float) and res.context_bias <= 0.5  # negatives keep the context
    assert all(json.loads(line) for line in out.read_text().splitlines())


def test_context_bias_warning(tmp_path):
    with FakeOpenAIServer(Smart(biased=True)) as srv, pytest.warns(UserWarning, match="context-bias share"):
        res = gen.generate_pairs("power", 4, tmp_path / "p.jsonl", config=_cfg(srv), progress=False)
    assert res.context_bias > 0.5 and "context-bias share" in res.summary()


@pytest.mark.parametrize("fn, record, tag", [
    (gen.generate_system_prompts, SystemPrompt, "sys"), (gen.generate_portraits, PortraitItem, "pvq"),
    (gen.generate_dilemmas, Dilemma, "dil"), (None, Query, "query")])
def test_other_kinds(server, tmp_path, fn, record, tag):
    out = tmp_path / "out.jsonl"
    kw = dict(config=_cfg(server), batch_size=3, progress=False)
    res = gen.generate_queries(4, out, category="advice", **kw) if fn is None else fn("power", 4, out, **kw)
    assert res.written == 4 and res.complete and len(server.requests) == 2
    rows = read_jsonl(out, record)
    prefix = "advice-query" if fn is None else f"power-{tag}"
    assert [r.id for r in rows] == [f"{prefix}-g{i:04d}" for i in range(1, 5)]
    if record is Dilemma:
        assert {r.conflict_value for r in rows} == {"achievement"}  # canonicalised by data._validate


def test_429_500_timeout_and_malformed_are_retried(server, tmp_path):
    server.enqueue(Reply("slow down", status=429, headers={"Retry-After": "1"}), Reply(status=500),
                   Reply("this is not json"), Reply('{"wrong": "keys"}'), Reply("[]", delay=1.0))
    out = tmp_path / "sys.jsonl"
    res = gen.generate_system_prompts("power", 2, out, config=_cfg(server, timeout=0.3), concurrency=1,
                                      batch_size=2, progress=False)
    # chat 1: 429, 500, not-JSON; chat 2: wrong keys; chat 3: timeout, then a valid reply
    assert (res.written, res.failed, res.retries, res.malformed, res.requests) == (2, 0, 3, 2, 6)
    assert len(read_jsonl(out, SystemPrompt)) == 2


def test_faults_in_pairs_complete_with_concurrency(server, tmp_path):
    server.enqueue(Reply(status=503), Reply('{"negative": ""}'), Reply("nope"), Reply(status=429))
    out = tmp_path / "pairs.jsonl"
    res = gen.generate_pairs("power", 4, out, config=_cfg(server), concurrency=2, batch_size=2,
                             progress=False)
    assert res.complete and res.written == 4 and res.failed == 0 and res.retries >= 2
    assert len({r.id for r in read_jsonl(out, ContrastPair)}) == 4


def test_budget_exhausted_then_resume_without_rerequesting(tmp_path):
    smart, broken = Smart(), {"after": 4}

    def responder(body: dict) -> Reply:
        return Reply(status=500) if len(srv.requests) > broken["after"] else smart(body)

    out = tmp_path / "pairs.jsonl"
    with FakeOpenAIServer(responder) as srv:
        cfg = _cfg(srv, max_attempts=2, max_malformed=0)
        res = gen.generate_pairs("tradition", 6, out, config=cfg, concurrency=1, batch_size=6, progress=False)
        # 1 batch of 6 positives + 3 negatives succeed; 3 negatives and then 3 more batches (the cap) fail
        assert (res.written, res.complete, res.failed) == (3, False, 6) and "INCOMPLETE" in res.summary()
        assert len(srv.requests) == 4 + 6 * 2 and len(res.failures) == 6
        first = read_jsonl(out, ContrastPair)
        broken["after"] = 10 ** 6
        before = len(srv.requests)
        res2 = gen.generate_pairs("tradition", 6, out, config=cfg, concurrency=1, batch_size=6,
                                  progress=False)
        assert len(srv.requests) - before == 1 + 3  # one batch of 3 positives and their 3 negatives only
    assert (res2.skipped, res2.written, res2.complete) == (3, 3, True)
    rows = read_jsonl(out, ContrastPair)  # read_jsonl rejects duplicate ids
    assert rows[:3] == first and [r.id for r in rows] == [f"tradition-pair-g{i:04d}" for i in range(1, 7)]
    res3 = gen.generate_pairs("tradition", 6, out, config=cfg, progress=False)
    assert res3.written == 0 and res3.skipped == 6 and res3.requests == 0


def test_crash_after_k_items_then_resume(server, tmp_path, monkeypatch):
    out, calls, real = tmp_path / "sys.jsonl", [], gen._append

    def crashing(fh, line):
        calls.append(line)
        if len(calls) == 3:
            raise RuntimeError("injected crash")
        real(fh, line)

    monkeypatch.setattr(gen, "_append", crashing)
    kw = dict(config=_cfg(server), concurrency=1, batch_size=2, progress=False)
    with pytest.raises(RuntimeError, match="injected"):
        gen.generate_system_prompts("hedonism", 6, out, **kw)
    assert len(read_jsonl(out, SystemPrompt)) == 2
    monkeypatch.setattr(gen, "_append", real)
    with open(out, "a") as f:  # a write cut short by the crash
        f.write('{"id": "hedonism-sys-g0003", "val')
    before = len(server.requests)
    with pytest.warns(UserWarning, match="partial last line"):
        res = gen.generate_system_prompts("hedonism", 6, out, **kw)
    assert len(server.requests) - before == 2 and (res.skipped, res.written) == (2, 4)
    rows = read_jsonl(out, SystemPrompt)
    assert [r.id for r in rows] == [f"hedonism-sys-g{i:04d}" for i in range(1, 7)]


def test_deduplication(server, tmp_path):
    bundled = load_system_prompts("benevolence")[0].text
    out = tmp_path / "sys.jsonl"
    out.write_text(json.dumps({"id": "benevolence-sys-mine", "value": "benevolence",
                               "text": "Protect loved ones."}) + "\n")
    server.enqueue(Reply(json.dumps(["Care for family.", "care for FAMILY!", "protect loved ones", bundled])),
                   Reply(json.dumps(["Help friends.", "Care for family"])))
    res = gen.generate_system_prompts("benevolence", 3, out, config=_cfg(server), concurrency=1, batch_size=3,
                                      progress=False)
    assert (res.written, res.duplicates, res.skipped, len(server.requests)) == (3, 4, 0, 3)
    texts = [r.text for r in read_jsonl(out, SystemPrompt)]
    assert len({gen.normalize_text(t) for t in texts}) == len(texts) == 4


def test_missing_config_is_a_clear_error(tmp_path, monkeypatch, capsys):
    for var in ("OPENAI_BASE_URL", "MECHVALUE_GEN_MODEL", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(MechvalueError, match=r"base URL .*model"):
        gen.generate_pairs("power", 2, tmp_path / "x.jsonl")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    with pytest.raises(gen.GenerationError, match="MECHVALUE_GEN_MODEL") as exc:
        gen.ClientConfig.resolve()
    assert "base URL" not in str(exc.value)
    monkeypatch.setenv("MECHVALUE_GEN_MODEL", "m")
    assert gen.ClientConfig.resolve().model == "m" and gen.ClientConfig.resolve().api_key == "EMPTY"
    monkeypatch.delenv("MECHVALUE_GEN_MODEL")
    assert gen.main(["pairs", "--value", "power", "--n", "2", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "mechvalue: error:" in capsys.readouterr().err and not (tmp_path / "x.jsonl").exists()


def test_cli_and_fatal_status(server, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    argv = ["pairs", "--value", "universalism", "--n", "2", "--out", str(out), "--base-url", server.base_url,
            "--model", "fake-model", "--no-progress", "--batch-size", "2"]
    assert gen.main(argv) == 0 and "2 written" in capsys.readouterr().out
    assert gen.main(["dilemmas", "--n", "1", "--out", str(out), "--base-url", "u", "--model", "m"]) == 2
    server.enqueue(Reply("bad key", status=401))
    with pytest.raises(gen.GenerationError, match="HTTP 401"):
        gen.generate_portraits("power", 1, tmp_path / "q.jsonl", config=_cfg(server), progress=False)


def test_always_failing_endpoint_is_bounded(tmp_path):
    with FakeOpenAIServer(lambda body: Reply(status=500)) as srv:
        res = gen.generate_portraits("power", 4, tmp_path / "p.jsonl", config=_cfg(srv, max_attempts=2),
                                     batch_size=2, progress=False)
    assert (res.written, res.failed, len(srv.requests), res.complete) == (0, 6, 12, False)


def test_parse_json_reply():
    assert gen.parse_json_reply('<think>hmm [1]</think>Sure! ```json\n["a"]\n```') == ["a"]
    assert gen.parse_json_reply('Here you go: {"negative": "x"} Hope it helps.') == {"negative": "x"}
    with pytest.raises(gen.MalformedReply):
        gen.parse_json_reply("no json here")
