"""mechvalue.evaluate.judges: lexicon, classifier (SmolLM2 + planted signal), OpenAI-compatible judge, Touché F1."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pandas as pd
import pytest
from conftest import make_tiny_model
from judge_server_helpers import JudgeReply, JudgeServer, yes_no_responder  # noqa: E402 (tests/ is on sys.path)
from llama_server_helpers import llama_cpp_server  # noqa: E402

from mechvalue.core.errors import CorruptFileError, MechvalueError
from mechvalue.core.values import VALUES
from mechvalue.data.synthesize import ClientConfig
from mechvalue.evaluate import judges
from mechvalue.evaluate.judges import ClassifierJudge, Judge, LexiconJudge, OpenAIJudge, evaluate_judge_on_touche
from mechvalue.evaluate.openai_judge import JudgeError, score_csr, score_geval

BENEVOLENT = ("I stayed up all night to help my friend move, cooked for my sick neighbour and offered my "
              "family support, kindness and care.")
POWER = "He wants authority and control over others, and the wealth, status and dominance that come with it."


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# ---------------------------------------------------------------- lexicon


def test_lexicon_scores_the_right_value_higher():
    j = LexiconJudge()
    assert isinstance(j, Judge)
    ben, pow_ = j.judge([BENEVOLENT, POWER], "benevolence"), j.judge([BENEVOLENT, POWER], "Power")
    assert ben[0] > pow_[0] and pow_[1] > ben[1]
    scores = j.judge_many([BENEVOLENT, POWER, "", "The table is brown."])
    assert scores.shape == (4, 10) and ((scores >= 0) & (scores < 1)).all()
    assert scores[2].sum() == 0
    assert list(j.label([BENEVOLENT, POWER], "benevolence")) == [1.0, 0.0]


def test_lexicon_labels_match_pyvalues_dictionary_classifier():
    from pyvalues.dictionary_classifier import OriginalValuesDictionaryClassifier

    texts = [BENEVOLENT, POWER, "We must respect our ancestors' customs and obey the rules.",
             "Adventure and excitement make life fun; I enjoy every party!", "Nothing here."]
    clf = OriginalValuesDictionaryClassifier.get_default()
    expected = np.array([[float(r[v]) for v in VALUES] for r in clf.classify_segments_for_original_values(texts)])
    got = (LexiconJudge().judge_many(texts) >= 0.5).astype(float)
    np.testing.assert_array_equal(got, expected)


def test_judge_rejects_a_bare_string_and_unknown_values():
    with pytest.raises(MechvalueError, match="sequence of strings"):
        LexiconJudge().judge("one text", "power")
    with pytest.raises(MechvalueError, match="unknown value"):
        LexiconJudge().judge(["x"], "kindness")


# ---------------------------------------------------------------- classifier: planted signal


def _planted(monkeypatch, d: int = 24, noise: float = 0.3, seed: int = 0):
    """Replace the model features with synthetic ones: value direction on positives, scene on both sides."""
    from mechvalue.data.bundled import load_pairs

    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0][:, :2 * len(VALUES)].T  # orthonormal rows
    table = {}
    for p in load_pairs():
        k = VALUES.index(p.value)
        scene = basis[len(VALUES) + k]  # topic of the value's scenes, on both sides
        table[p.positive] = 2 * basis[k] + scene + noise * rng.normal(size=d)
        table[p.negative] = scene + noise * rng.normal(size=d)

    def features(self, texts, progress=False):
        return np.stack([table[t] for t in texts]).astype(np.float32)

    monkeypatch.setattr(ClassifierJudge, "_features", features)
    return basis


def test_classifier_heads_recover_a_planted_signal(monkeypatch, tiny_model):
    basis = _planted(monkeypatch)
    judge = ClassifierJudge.train(tiny_model, layer=1, C=1.0)
    m = judge.metrics
    assert m["mean"]["pair_acc"] > 0.97 and m["mean"]["balanced_acc"] > 0.97 and m["mean"]["auc"] > 0.99
    assert m["mean"]["relevance_acc"] > 0.95
    # the benevolence head points along the planted benevolence direction (in standardized space)
    k = VALUES.index("benevolence")
    w = judge._t["coef"][k] / judge._t["scale"]
    cos = [abs(w @ b) / np.linalg.norm(w) for b in basis]
    assert int(np.argmax(cos)) == k
    feats = np.stack([2 * basis[k], basis[len(VALUES) + k], basis[len(VALUES) + VALUES.index("power")]])
    s = judge._heads(feats.astype(np.float32), "coef", "intercept")[:, k]
    r = judge._heads(feats.astype(np.float32), "rel_coef", "rel_intercept")[:, k]
    assert s[0] > 0.9 and s[1] < 0.1 and r[1] > 0.9 and r[2] < 0.1


def test_classifier_save_load_and_model_check(monkeypatch, tiny_model, tmp_path, tokenizer):
    _planted(monkeypatch)
    judge = ClassifierJudge.train(tiny_model, layer=1, values=["power", "universalism"])
    path = judge.save(tmp_path / "judge.safetensors")
    again = ClassifierJudge.load(path, tiny_model)
    texts = judge_texts()
    np.testing.assert_allclose(again.judge_many(texts), judge.judge_many(texts), rtol=1e-5)
    assert again.metrics == judge.metrics and again.values == ["power", "universalism"]
    with pytest.raises(MechvalueError, match="no head"):
        again.judge(texts, "hedonism")
    with pytest.raises(CorruptFileError, match="model_id"):
        ClassifierJudge.load(path, make_tiny_model(tokenizer, seed=1))
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CorruptFileError):
        ClassifierJudge.load(tmp_path / "bad.safetensors", tiny_model)


def test_classifier_refuses_a_hooked_model(tiny_model):
    d = tiny_model.cfg.d_model
    tensors = {"mean": np.zeros(d), "scale": np.ones(d), "coef": np.ones((1, d)), "intercept": np.zeros(1),
               "rel_coef": np.ones((1, d)), "rel_intercept": np.zeros(1)}
    meta = {"values": ["power"], "layer": 1, "hook": "blocks.1.hook_resid_post", "span": "prompt", "d_model": d,
            "batch_size": 4, "max_length": 32}
    judge = ClassifierJudge(tiny_model, tensors, meta)
    assert judge.judge(["A short text."], "power").shape == (1,)
    with tiny_model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda act, hook: act)]):
        with pytest.raises(MechvalueError, match="unmodified model"):
            judge.judge(["Another text."], "power")


def test_judge_base_defaults_and_training_guards(tiny_model):
    class Length(judges.JudgeBase):
        name = "length"
        threshold = 0.2

        def judge(self, texts, value, *, questions=None):
            return np.array([min(len(t) / 100, 1.0) for t in texts])

    j = Length()
    assert j.judge_many(["x" * 10, "x" * 50], ["power", "hedonism"]).shape == (2, 2)
    assert list(j.label(["x" * 10, "x" * 50], "power")) == [0.0, 1.0]
    assert judges.judge_many(j, ["abc"]).shape == (1, 10)
    with pytest.raises(NotImplementedError):
        judges.JudgeBase().judge(["x"], "power")
    with pytest.raises(MechvalueError, match="at least two values"):
        ClassifierJudge.train(tiny_model, values=["power"])


def judge_texts() -> list[str]:
    from mechvalue.data.bundled import load_pairs

    pairs = load_pairs(["power", "universalism"], split="test")[:4]
    return [p.positive for p in pairs] + [p.negative for p in pairs]


# ---------------------------------------------------------------- classifier: the real model


@pytest.fixture(scope="module")
def trained(smollm, one_thread):
    t0 = time.perf_counter()
    judge = ClassifierJudge.train(smollm)
    judge.train_seconds = time.perf_counter() - t0
    return judge


@pytest.mark.model
def test_classifier_held_out_accuracy(trained):
    m = trained.metrics
    print(f"\nClassifierJudge layer {trained.layer}: trained in {trained.train_seconds:.0f}s; held-out "
          + ", ".join(f"{k} {v:.3f}" for k, v in m["mean"].items()))
    for v in VALUES:
        print(f"  {v:15s} " + " ".join(f"{k}={x:.2f}" for k, x in m[v].items()))
    assert m["mean"]["pair_acc"] > 0.8
    assert m["mean"]["balanced_acc"] > 0.8
    assert m["mean"]["relevance_acc"] > 0.8


@pytest.mark.model
def test_classifier_relevance_and_judge_on_clear_texts(trained):
    scores = trained.judge_many([BENEVOLENT, POWER], ["benevolence", "power"])
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]
    rel = trained.relevance([BENEVOLENT, POWER], "power")
    assert rel[1] > rel[0] and ((rel >= 0) & (rel <= 1)).all()


@pytest.mark.model
def test_classifier_beats_all_positive_baseline_on_touche(trained, shared_data):
    """Touché validation sample (400), thresholds tuned on a training sample (400), one per value."""
    from mechvalue.data.public import load_touche

    folder = shared_data / "touche23_valueeval"
    val = load_touche(folder, "validation").sample(400, random_state=0)
    train = load_touche(folder, "training").sample(400, random_state=0)
    t0 = time.perf_counter()
    res = evaluate_judge_on_touche(trained, val, train_df=train, per_value=True)
    single = evaluate_judge_on_touche(trained, val, train_df=train)  # features are memoised: no new pass
    print(f"\nTouché validation sample ({time.perf_counter() - t0:.0f}s), per-value thresholds:\n"
          f"{res.round(3).to_string()}\none threshold ({single.attrs['thresholds']['power']:.3f}): macro-F1 "
          f"{single.attrs['macro_f1']:.3f} vs baseline {single.attrs['baseline_macro_f1']:.3f}")
    assert res.attrs["macro_f1"] > res.attrs["baseline_macro_f1"]
    assert res.set_index("value").loc["macro", "auc"] > 0.55


# ---------------------------------------------------------------- Touché evaluation mechanics


class _Oracle:
    """A stub judge scoring each text 0.9 where its gold label is 1, else 0.1."""

    name = "oracle"

    def __init__(self, df: pd.DataFrame):
        rows = df.set_index("premise").iterrows()
        self.table = {t: {v: float(row[v]) * 0.8 + 0.1 for v in VALUES} for t, row in rows}

    def judge(self, texts, value, *, questions=None):
        return np.array([self.table[t][value] for t in texts])


def _toy_touche(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"premise": [f"argument {i}" for i in range(n)]})
    for k, v in enumerate(VALUES):
        df[v] = (rng.random(n) < 0.1 + 0.08 * k).astype(int)
    df.loc[0, list(VALUES)] = 1
    return df


def test_touche_evaluation_mechanics():
    df = _toy_touche()
    res = evaluate_judge_on_touche(_Oracle(df), df)
    assert list(res["value"]) == [*VALUES, "macro"]
    per = res.set_index("value")
    assert (per.loc[list(VALUES), "f1"] == 1.0).all() and res.attrs["macro_f1"] == 1.0
    p = df[list(VALUES)].mean()
    np.testing.assert_allclose(per.loc[list(VALUES), "baseline_f1"], 2 * p / (1 + p))
    assert res.attrs["threshold_source"] == "judge default"
    # an all-positive "judge" at threshold 0 reproduces the baseline exactly
    ones = type("Ones", (), {"name": "ones", "judge": lambda self, t, v, questions=None: np.ones(len(t))})()
    res1 = evaluate_judge_on_touche(ones, df, threshold=0.0)
    assert math.isclose(res1.attrs["macro_f1"], res1.attrs["baseline_macro_f1"])
    # tuning on a training frame: one threshold, or one per value
    tuned = evaluate_judge_on_touche(_Oracle(df), df, train_df=df, values=["power", "benevolence"])
    assert len(set(tuned.attrs["thresholds"].values())) == 1 and tuned.attrs["macro_f1"] == 1.0
    pv = evaluate_judge_on_touche(_Oracle(df), df, train_df=df, per_value=True)
    assert pv.attrs["threshold_source"].endswith("per value")
    with pytest.raises(MechvalueError, match="lacks columns"):
        evaluate_judge_on_touche(_Oracle(df), df.drop(columns=["power"]))


def test_lexicon_on_touche_validation(shared_data):
    from mechvalue.data.public import load_touche

    val = load_touche(shared_data / "touche23_valueeval", "validation")
    res = evaluate_judge_on_touche(LexiconJudge(), val)
    print(f"\nLexiconJudge on Touché validation ({len(val)} rows, threshold 0.5 = pyvalues):\n"
          f"{res.round(3).to_string()}")
    assert 0 < res.attrs["macro_f1"] < 1 and 0.3 < res.attrs["baseline_macro_f1"] < 0.5


# ---------------------------------------------------------------- OpenAI-compatible judge (fake server)


def _judge(server, tmp_path=None, **kw) -> OpenAIJudge:
    cfg = ClientConfig(server.base_url, "judge-model", "test-key", timeout=kw.pop("timeout", 2.0),
                       max_attempts=kw.pop("max_attempts", 5), max_malformed=kw.pop("max_malformed", 1),
                       backoff_base=0.001, backoff_max=0.01)
    return OpenAIJudge(config=cfg, **kw)


def test_score_functions():
    assert score_csr("Yes")["label"] == 1.0 and score_csr(" no.")["label"] == 0.0
    assert score_csr("Label: Yes, clearly")["label"] == 1.0
    assert score_csr("<think>no idea</think> Yes")["label"] == 1.0
    r = score_csr("Maybe")  # unreadable: missing (NaN), not a 0.5 guess
    assert math.isnan(r["score"]) and math.isnan(r["label"]) and not r["parsed"] and not r["from_logprobs"]
    r = score_csr("Yes", [("Yes", math.log(0.6), [("Yes", math.log(0.6)), (" No", math.log(0.2)),
                                                   ("yes", math.log(0.2))])])
    assert math.isclose(r["score"], 0.8) and r["label"] == 1.0 and r["from_logprobs"]
    g = score_geval("Score: 4", [("Score", -0.1, []), (":", -0.1, []),
                                 (" 4", math.log(0.5), [(" 4", math.log(0.5)), (" 5", math.log(0.5))])])
    assert math.isclose(g["raw"], 4.5) and math.isclose(g["score"], 0.875) and g["label"] == 1.0
    assert score_geval("I'd give it a 2 out of 5")["raw"] == 2.0
    assert score_geval("Score: 3")["label"] == 0.5 and score_geval("none")["parsed"] is False


def test_csr_prompt_and_yes_no_parsing():
    with JudgeServer() as server:
        server.enqueue(JudgeReply("Yes"), JudgeReply("No."), JudgeReply("Label: yes"),
                       JudgeReply("I cannot tell"), JudgeReply("Unsure"))
        j = _judge(server, logprobs=False, concurrency=1)
        assert isinstance(j, Judge)
        texts = ["I'd donate it.", "Keep it.", "Share it with them.", "Hmm."]
        labels = j.label(texts, "benevolence", questions=["What should I do?"] * 4)
        np.testing.assert_array_equal(labels, [1.0, 0.0, 1.0, np.nan])  # unreadable twice: missing, not 0.5
        scores = j.judge(texts, "benevolence", questions=["What should I do?"] * 4)
        np.testing.assert_array_equal(scores, [1.0, 0.0, 1.0, np.nan])
        assert j.stats["unparsed"] == 2 and len(server.requests) == 5  # "Hmm." re-asked once
        assert j.stats["unparseable"] == 1 and j.stats["missing"] == 2  # one judgment, returned twice
        body = server.requests[0]
        prompt = body["messages"][-1]["content"]
        assert "Human: What should I do?\nBob: I'd donate it." in prompt and prompt.endswith("Label:")
        assert "welfare of those with whom one is in frequent personal contact" in prompt
        assert body["model"] == "judge-model" and body["temperature"] == 0.0 and "logprobs" not in body
        assert "Human:" not in j.prompt("text", "power")


def test_geval_logprob_weighted_score():
    steps = [{"Score": -0.01}, {":": -0.01}, {" 4": math.log(0.6), " 5": math.log(0.3), " 3": math.log(0.1)}]
    with JudgeServer() as server:
        server.enqueue(JudgeReply("Score: 4", logprobs=steps), JudgeReply("Score: 2"))
        j = _judge(server, protocol="geval", top_logprobs=5, concurrency=1)
        recs = j.records(["Respect the elders.", "Do whatever."], "tradition", questions=["Q1", "Q2"])
        assert math.isclose(recs[0]["raw"], 4.2) and math.isclose(recs[0]["score"], 0.8)
        assert recs[0]["from_logprobs"] and recs[0]["label"] == 1.0
        assert recs[1]["raw"] == 2.0 and recs[1]["score"] == 0.25 and not recs[1]["from_logprobs"]  # fallback
        body = server.requests[0]
        assert body["logprobs"] is True and body["top_logprobs"] == 5
        assert "Question: Q1\nResponse: Respect the elders." in body["messages"][0]["content"]


def test_csr_logprob_weighted_and_bounded_concurrency():
    state = {"now": 0, "max": 0}
    lock = threading.Lock()
    base = yes_no_responder(0.7)

    def slow(body):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.15)
        with lock:
            state["now"] -= 1
        return base(body)

    with JudgeServer(slow) as server:
        j = _judge(server, concurrency=3)
        scores = j.judge([f"answer {i}" for i in range(9)], "power")
        np.testing.assert_allclose(scores, 0.7)
        assert 1 < state["max"] <= 3 and len(server.requests) == 9


def test_cache_hits_send_no_request_and_survive_a_new_instance(tmp_path):
    cache = tmp_path / "judgments.jsonl"
    with JudgeServer(yes_no_responder(0.9)) as server:
        j = _judge(server, cache=cache)
        texts = ["a", "b", "c", "a"]  # duplicates are asked once
        first = j.judge(texts, "power")
        assert len(server.requests) == 3 and j.stats["requests"] == 3
        np.testing.assert_array_equal(j.judge(texts, "power"), first)
        assert len(server.requests) == 3 and j.stats["cache_hits"] == 4
        j2 = _judge(server, cache=cache)
        np.testing.assert_array_equal(j2.judge(texts, "power"), first)
        assert len(server.requests) == 3 and j2.stats["requests"] == 0
        j2.judge(["a"], "security")  # another value is another prompt
        _judge(server, cache=cache, temperature=1.0).judge(["a"], "power")  # other sampling, other key
        assert len(server.requests) == 5
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(rows) == 5 and {r["model"] for r in rows} == {"judge-model"}


def test_transient_errors_and_malformed_replies_are_retried():
    with JudgeServer() as server:
        server.enqueue(JudgeReply("slow down", status=429, headers={"Retry-After": "0"}),
                       JudgeReply("boom", status=500), JudgeReply("Yes", delay=1.0),  # timeout
                       JudgeReply(raw="{not json"), JudgeReply(raw='{"id": "x", "object": "chat.completion"}'),
                       JudgeReply("Yes"))
        j = _judge(server, timeout=0.3, max_attempts=6, logprobs=False)
        assert list(j.judge(["x"], "power")) == [1.0]
        assert j.stats["requests"] == 6 and j.stats["retries"] == 5 and j.stats["malformed"] == 2


def test_exhausted_budgets_and_fatal_errors(tmp_path):
    with JudgeServer(yes_no_responder(0.9)) as server:
        server.enqueue(*[JudgeReply(status=503)] * 2, JudgeReply("No"))
        j = _judge(server, max_attempts=2, concurrency=1, logprobs=False, cache=tmp_path / "c.jsonl")
        with pytest.raises(JudgeError, match="1 of 2 judgments failed.*rerun to resume"):
            j.judge(["x", "y"], "power")
        assert list(j.judge(["x", "y"], "power")) == [1.0, 0.0]  # the rerun asks for the failed one only
        assert len(server.requests) == 4
        server.enqueue(*[JudgeReply(status=503)] * 2)
        nan = _judge(server, max_attempts=2, on_failure="nan").judge(["z"], "power")
        assert np.isnan(nan).all()
        server.enqueue(JudgeReply("bad key", status=401))
        with pytest.raises(JudgeError, match="401"):
            _judge(server).judge(["w"], "power")
    with pytest.raises(JudgeError, match="base URL"):
        OpenAIJudge(model="m", base_url="")
    with pytest.raises(JudgeError, match="protocol"):
        OpenAIJudge("http://127.0.0.1:9/v1", "m", protocol="likert")


_CHILD = textwrap.dedent("""
    import sys
    from mechvalue.data.synthesize import ClientConfig
    from mechvalue.evaluate.judges import OpenAIJudge
    cfg = ClientConfig(sys.argv[1], "judge-model", "k", timeout=5, backoff_base=0.001)
    OpenAIJudge(config=cfg, cache=sys.argv[2], concurrency=1).judge([f"text {i}" for i in range(8)], "power")
""")


def test_crash_mid_run_then_resume_pays_nothing_twice(tmp_path):
    cache = tmp_path / "judgments.jsonl"

    def slow(body):
        time.sleep(0.25)
        return yes_no_responder(0.6)(body)

    with JudgeServer(slow) as server:
        env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        child = subprocess.Popen([sys.executable, "-c", _CHILD, server.base_url, str(cache)], env=env)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and child.poll() is None:
                if cache.exists() and cache.read_text().count("\n") >= 3:
                    break
                time.sleep(0.05)
            assert child.poll() is None, "the child finished (or died) before it could be killed"
        finally:
            child.kill()
            child.wait()
        done = {json.loads(line)["prompt"] for line in cache.read_text().splitlines()}
        assert 3 <= len(done) < 8
        with open(cache, "ab") as fh:  # a torn write, as if the crash hit mid-line
            fh.write(b'{"key": "deadbeef", "sco')
        before = len(server.requests)
        with pytest.warns(UserWarning, match="partial last line"):
            j = _judge(server, cache=cache, concurrency=2)
        scores = j.judge([f"text {i}" for i in range(8)], "power")
        np.testing.assert_allclose(scores, 0.6)
        resumed = [r["messages"][0]["content"] for r in server.requests[before:]]
        assert not set(resumed) & done and len(resumed) == 8 - len(done)
        assert j.stats["cache_hits"] == len(done)
    assert cache.read_text().count("\n") == 8 and cache.read_bytes().endswith(b"\n")


# ---------------------------------------------------------------- optional: a real llama.cpp server


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                    reason="llama-cpp-python is not installed (pip install 'llama-cpp-python[server]' to run "
                           "the end-to-end judge test against a real OpenAI-compatible server)")
def test_end_to_end_against_llama_cpp_server(tmp_path):
    from mechvalue.lm.models import offline_gguf_path

    with llama_cpp_server(offline_gguf_path(), tmp_path / "server.log", n_ctx=2048) as base:
        for protocol in ("csr", "geval"):
            j = OpenAIJudge(base, "smollm2", "none", protocol=protocol, cache=tmp_path / f"{protocol}.jsonl",
                            concurrency=1, max_tokens=8, config=ClientConfig(base, "smollm2", timeout=120))
            recs = j.records([BENEVOLENT, POWER], "benevolence", questions=["What matters to you?"] * 2)
            assert j.stats["requests"] >= 2 and all(isinstance(r["reply"], str) for r in recs)
            scores = np.array([r["score"] for r in recs])
            assert ((scores >= 0) & (scores <= 1)).all()
            print(f"\nllama.cpp {protocol}: " + "; ".join(f"{r['reply']!r} -> {r['score']:.3f} "
                                                        f"(logprobs: {r['from_logprobs']})" for r in recs))
            requests = j.stats["requests"]
            j.judge([BENEVOLENT, POWER], "benevolence", questions=["What matters to you?"] * 2)
            assert j.stats["requests"] == requests  # cached


def test_module_exports():
    assert set(judges.__all__) >= {"Judge", "LexiconJudge", "ClassifierJudge", "OpenAIJudge",
                                   "evaluate_judge_on_touche"}
