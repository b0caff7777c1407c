"""Neuron explanations (Bills et al. 2023): pure parts, a planted neuron, a fake endpoint over real HTTP, the CLI,
and (optional) a real llama.cpp server."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import re
import threading
import time
import zlib

import pandas as pd
import pytest
import torch
from conftest import make_tiny_model
from judge_server_helpers import JudgeReply, JudgeServer  # noqa: E402 (tests/ is on sys.path)
from llama_server_helpers import llama_cpp_server  # noqa: E402

from mechvalue.cli.main import main
from mechvalue.core.endpoint import ClientConfig
from mechvalue.core.errors import DataError, HookError, MechvalueError
from mechvalue.evaluate.audit import top_activating
from mechvalue.evaluate.explain import (
    ActivationRecord,
    Explainer,
    ExplainError,
    discretize,
    explain_neurons,
    explanation_prompt,
    format_examples,
    neuron_records,
    parse_explanation,
    parse_simulation,
    scan_activations,
    simulation_prompt,
    simulation_score,
    summarize,
)
from mechvalue.evaluate.explain_prompts import PREFIX

NEURON, WORD = 7, " banana"
FRUIT = ["I ate a banana after lunch.", "Please pass me that banana, thanks.", "A banana a day keeps the doctor busy.",
         "She peeled the banana slowly.", "The banana was too ripe to eat.", "He slipped on a banana peel.",
         "Buy one banana and two apples.", "My banana bread needs more sugar.", "The monkey grabbed a banana.",
         "Is a banana a berry or not?", "Put the banana in the fridge.", "That banana looks green."]
PLAIN = ["The weather is cold today.", "We walked along the river.", "Numbers go up and down.",
         "The train left at noon.", "My sister reads a lot of books.", "Close the window, please.",
         "The meeting starts at nine.", "Cats sleep most of the day.", "He fixed the old bicycle.",
         "The library opens late on Sundays.", "They painted the fence blue.", "Rain is expected tomorrow."]
TEXTS = FRUIT + PLAIN


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def planted(tokenizer):
    """Tiny model whose layer-0 neuron 7 reads residual coordinate 0, which only WORD's embedding sets (as in
    test_audit.py)."""
    ids = tokenizer(WORD, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1
    model = make_tiny_model(tokenizer, seed=5)
    with torch.no_grad():
        model.W_E[:, 0] = 0.0
        model.W_E[ids[0], 0] = 6.0
        model.blocks[0].attn.W_O[:, :, 0] = 0.0  # attention never writes coordinate 0
        for w in (model.blocks[0].mlp.W_gate, model.blocks[0].mlp.W_in):
            w[:, NEURON] = 0.0
            w[0, NEURON] = 3.0
        for bias, i in ((model.blocks[0].attn.b_O, 0), (model.blocks[0].mlp.b_in, NEURON)):
            if bias is not None:  # the bridge's tiny Llama has no biases
                bias[i] = 0.0
    return model


def _rec(tokens, acts):
    return ActivationRecord("".join(tokens), list(tokens), torch.tensor(acts, dtype=torch.float32))


# ---------------------------------------------------------------- pure parts


def test_discretize_is_bills_scale():
    acts = torch.tensor([-1.0, 0.0, 0.5, 1.0, 1.99, 2.0, 3.0])
    assert discretize(acts, 2.0).tolist() == [0, 0, 2, 5, 9, 10, 10]  # negative -> 0, above the max -> 10
    assert discretize(acts, 0.0).tolist() == [0] * 7 and discretize(acts, -1.0).tolist() == [0] * 7
    assert discretize(acts, float("nan")).dtype == torch.long


def test_example_and_prompt_formats():
    recs = [_rec([" I", " ate", " banana", "\n"], [0.0, -0.3, 2.0, 0.1]), _rec([" banana", "!"], [1.0, 0.0])]
    text = format_examples(recs, 2.0)
    assert text == "<start>\n I\t0\n ate\t0\n banana\t10\n\\n\t0\n<end>\n\n<start>\n banana\t5\n!\t0\n<end>"
    prompt = explanation_prompt(recs)
    assert text in prompt and prompt.endswith(PREFIX) and "one short phrase" in prompt
    assert "zeros left out:  banana (10),  banana (5)" in prompt
    sim = simulation_prompt("the word banana", [" I", " ate", "\tx"])
    assert "the main thing this neuron does is find the word banana." in sim
    assert sim.endswith("<start>\n I\n ate\n\\tx\n<end>") and "token, a tab, the number" in sim
    with pytest.raises(MechvalueError, match="no activation records"):
        explanation_prompt([])
    with pytest.raises(MechvalueError, match="no tokens"):
        simulation_prompt("x", [])


@pytest.mark.parametrize(("reply", "phrase"), [
    ("the word banana.", "the word banana"),
    (" The main thing this neuron does is find fruit names.\nMore text.", "fruit names"),
    ("**Explanation:** the main thing this neuron does is find \"banana\"", "banana"),
    ("<think>hmm, bananas?</think>\nmentions of bananas", "mentions of bananas"),
    ("", ""), ("   \n\n", ""),
])
def test_parse_explanation(reply, phrase):
    assert parse_explanation(reply) == phrase


def test_parse_simulation_tolerates_messy_replies():
    tokens = [" I", " ate", " a", " banana", ".", " Yum"]
    reply = ("Sure! Here are my predictions:\n```\n<start>\n I\t0\n ate 1\nbanana\t10\n.: 12\n"
             "Yum | 3.5\n<end>\n```\nHope this helps.\nextra\t4\n")
    pred, unparsed = parse_simulation(reply, tokens)
    assert pred.shape == (6,)
    assert pred[[0, 1, 3, 4, 5]].tolist() == [0.0, 1.0, 10.0, 10.0, 3.5]  # 12 clipped to 10
    assert math.isnan(pred[2])  # " a" skipped by the simulator: missing
    assert unparsed == 3  # the preamble, "Hope this helps." and "extra 4" (matches no token)
    pred, unparsed = parse_simulation("0\n7\n", [" x", " y", " z"])  # bare numbers fill in order
    assert pred[:2].tolist() == [0.0, 7.0] and math.isnan(pred[2]) and unparsed == 0
    pred, unparsed = parse_simulation("2023\n2023\t3\n", [" 2023"])  # an echoed token, then its line
    assert pred.tolist() == [3.0] and unparsed == 1
    pred, unparsed = parse_simulation("I cannot do this.", [" x"])
    assert math.isnan(pred[0]) and unparsed == 1
    pred, _ = parse_simulation('" the"\t4\nthe\t2\n', [" the", " the"])  # quotes ignored, repeats in order
    assert pred.tolist() == [4.0, 2.0]


def test_simulation_score():
    g = torch.Generator().manual_seed(0)
    true = [torch.rand(50, generator=g) for _ in range(100)]
    assert simulation_score(true, true) == pytest.approx(1.0)
    assert simulation_score(true, [2 * t + 1 for t in true]) == pytest.approx(1.0)
    assert simulation_score(true, [-t for t in true]) == pytest.approx(-1.0)
    flat = torch.cat(true)
    shuffled = flat[torch.randperm(flat.numel(), generator=g)].split(50)
    assert abs(simulation_score(true, list(shuffled))) < 0.05
    assert math.isnan(simulation_score(true, [torch.full((50,), 3.0) for _ in true]))  # constant prediction
    assert math.isnan(simulation_score([torch.ones(5)], [torch.arange(5.0)]))  # constant truth
    with_nan = [t.clone() for t in true]
    for t in with_nan:
        t[::2] = float("nan")  # missing predictions are left out
    assert simulation_score(true, [torch.where(w.isnan(), w, t) for w, t in zip(with_nan, true)]) == pytest.approx(1.0)
    assert math.isnan(simulation_score([torch.arange(3.0)], [torch.tensor([1.0, float("nan"), 2.0])]))  # 2 tokens
    with pytest.raises(MechvalueError, match="differ in length"):
        simulation_score([torch.ones(3)], [torch.ones(4)])
    with pytest.raises(MechvalueError, match="predicted texts"):
        simulation_score([torch.ones(3)], [])


def test_summarize_ci_and_difference():
    df = pd.DataFrame({"kind": ["target"] * 4 + ["random"] * 4,
                       "score": [0.9, 0.8, 0.85, float("nan"), 0.1, -0.1, 0.0, 0.05]})
    s = summarize(df)
    assert s["target"]["n"] == 4 and s["target"]["n_scored"] == 3 and s["target"]["mean"] == pytest.approx(0.85)
    assert s["target"]["ci_low"] <= 0.85 <= s["target"]["ci_high"]
    assert s["difference"]["estimate"] == pytest.approx(0.85 - 0.0125)
    assert 0 < s["difference"]["ci_low"] <= s["difference"]["estimate"] <= s["difference"]["ci_high"]
    empty = summarize(df.assign(score=[0.5] + [float("nan")] * 7))
    assert empty["target"]["mean"] == 0.5 and math.isnan(empty["target"]["ci_low"])
    assert math.isnan(empty["random"]["mean"]) and math.isnan(empty["difference"]["estimate"])
    with pytest.raises(MechvalueError, match="kind and score"):
        summarize(pd.DataFrame({"x": [1]}))


# ---------------------------------------------------------------- planted neuron


def test_planted_neuron_records(planted, one_thread):
    recs = neuron_records(planted, 0, NEURON, TEXTS, n_explain=4, n_top_holdout=3, n_random_holdout=3, seed=1)
    assert len(recs.explanation) == 4 and len(recs.simulation) == 6
    assert all("banana" in r.text for r in recs.explanation + recs.simulation[:3])
    for r in recs.explanation:
        j = int(r.acts.argmax())
        assert r.tokens[j] == WORD and r.max > 0 and len(r.tokens) == len(r.acts)
        assert all(a == 0.0 for t, a in zip(r.tokens, r.acts.tolist()) if t != WORD)  # silent elsewhere
    assert [r.max for r in recs.explanation] == sorted((r.max for r in recs.explanation), reverse=True)
    assert recs.max_act == pytest.approx(recs.explanation[0].max)
    assert not {r.text for r in recs.explanation} & {r.text for r in recs.simulation}  # disjoint halves
    assert len({r.text for r in recs.simulation}) == 6
    again = neuron_records(planted, 0, NEURON, TEXTS, n_explain=4, n_top_holdout=3, n_random_holdout=3, seed=1)
    assert [r.text for r in again.simulation] == [r.text for r in recs.simulation]  # seeded
    other = neuron_records(planted, 0, NEURON, TEXTS, n_explain=4, n_top_holdout=3, n_random_holdout=3, seed=2)
    assert {r.text for r in other.explanation + other.simulation} != {r.text for r in recs.explanation
                                                                      + recs.simulation}
    levels = format_examples(recs.explanation[:1], recs.max_act)
    assert f"{WORD}\t10" in levels and levels.count("\t0") == len(recs.explanation[0].tokens) - 1


def test_scan_matches_audit(planted, one_thread):
    scan = scan_activations(planted, TEXTS[:6], [(0, NEURON), (1, 3), (0, 2)], batch_size=4)
    top = {ex["text"]: ex for ex in top_activating(planted, 0, NEURON, TEXTS[:6], k=6)}
    for row in scan:
        assert row["acts"].shape == (len(row["tokens"]), 3) and row["tokens"] == top[row["text"]]["tokens"]
        torch.testing.assert_close(row["acts"][:, 0], torch.tensor(top[row["text"]]["acts"]))
    other = top_activating(planted, 1, 3, TEXTS[:1], k=1)[0]
    torch.testing.assert_close(scan[0]["acts"][:, 1], torch.tensor(other["acts"]))


def test_records_reject_bad_input(planted):
    with pytest.raises(HookError, match="does not exist: layer 0 has 48 neurons"):
        neuron_records(planted, 0, 48, TEXTS)
    with pytest.raises(HookError, match="layer 9 does not exist"):
        neuron_records(planted, 9, 1, TEXTS)
    with pytest.raises(DataError, match="at least 2 distinct"):
        neuron_records(planted, 0, 1, ["only one", "only one", "  "])
    with pytest.raises(DataError, match="at least 2 distinct"):
        neuron_records(planted, 0, 1, [])
    with pytest.raises(MechvalueError, match="n_explain >= 1"):
        neuron_records(planted, 0, 1, TEXTS, n_explain=0)


# ---------------------------------------------------------------- a fake endpoint over real HTTP

_TOKENS = re.compile(r"<start>\n(.*)\n<end>", re.S)


def responder(peak: list[int] | None = None, delay: float = 0.0):
    """Explains "the word banana" when the examples show it firing, else "nothing in particular"; simulates 10 on
    banana tokens for the first, seeded random levels for the second. ``peak`` records the requests in flight."""
    lock, inflight = threading.Lock(), [0]

    def respond(body: dict) -> JudgeReply:
        if peak is not None:
            with lock:
                inflight[0] += 1
                peak[0] = max(peak[0], inflight[0])
        time.sleep(delay)
        prompt = body["messages"][0]["content"]
        if prompt.endswith(PREFIX):
            reply = "the word banana." if f"{WORD}\t10" in prompt else "nothing in particular"
        else:
            tokens = _TOKENS.search(prompt).group(1).split("\n")
            rng = random.Random(zlib.crc32(prompt.encode()))
            if "banana." in prompt:
                reply = "\n".join(f"{t}\t{10 if t == WORD else 0}" for t in tokens)
            else:
                reply = "\n".join(f"{t}\t{rng.randint(0, 10)}" for t in tokens)
        if peak is not None:
            with lock:
                inflight[0] -= 1
        return JudgeReply(reply)

    return respond


def _explainer(server, cache=None, **kw):
    cfg = ClientConfig(server.base_url, "fake-explainer", timeout=10, max_attempts=2, backoff_base=0.001)
    return Explainer(server.base_url, "fake-explainer", "sk-test", cache=cache, config=cfg, **kw)


RUN = {"n_random": 3, "seed": 0, "n_explain": 4, "n_top_holdout": 3, "n_random_holdout": 2, "max_length": 24,
       "progress": False}


def test_end_to_end_scores_the_planted_neuron_over_http(planted, tmp_path, one_thread):
    cache = tmp_path / "cache.jsonl"
    with JudgeServer(responder()) as server:
        ex = _explainer(server, cache)
        df = explain_neurons(planted, [(0, NEURON)], TEXTS, ex, **RUN)
        assert list(df.kind) == ["target"] + ["random"] * 3 and (df.layer == 0).all()
        assert len(set(df["index"])) == 4
        target = df.iloc[0]
        assert target.explanation == "the word banana" and target.score > 0.9 and target.note == ""
        assert target.unparsed == 0 and target.n_sim_tokens > 20 and "[[ banana]]" in target.top_example
        rand = df.iloc[1:]
        assert (rand.explanation == "nothing in particular").all() and (rand.score.abs() < 0.5).all()
        opts = {"n_explain": 4, "n_top_holdout": 3, "n_random_holdout": 2, "max_length": 24}
        sims = {(r.explanation, tuple(rec.tokens)) for r in df.itertuples()
                for rec in neuron_records(planted, r.layer, r.index, TEXTS, **opts).simulation}
        n = 4 + len(sims)  # one explanation per neuron, one simulation per distinct (explanation, text)
        assert 4 + 5 < n <= 4 + 4 * 5
        assert len(server.requests) == n == ex.stats["requests"] and ex.stats["cache_hits"] == 0
        assert all(r["model"] == "fake-explainer" and r["temperature"] == 0.0 for r in server.requests)
        assert {r["max_tokens"] for r in server.requests[:4]} == {64}
        assert cache.read_text().count("\n") == n
        s = summarize(df)
        assert s["target"]["mean"] > 0.9 and s["difference"]["estimate"] > 0.5

        again = _explainer(server, cache)  # a second run: everything from the cache
        df2 = explain_neurons(planted, [(0, NEURON)], TEXTS, again, **RUN)
        assert len(server.requests) == n and again.stats["requests"] == 0 and again.stats["cache_hits"] == 4 + 4 * 5
        pd.testing.assert_frame_equal(df, df2)

        lines = cache.read_bytes().splitlines(keepends=True)  # an interrupted run: 9 replies and a torn line
        cache.write_bytes(b"".join(lines[:9]) + lines[9][:25])
        with pytest.warns(UserWarning, match="partial last line"):
            resumed = _explainer(server, cache)
        df3 = explain_neurons(planted, [(0, NEURON)], TEXTS, resumed, **RUN)
        assert resumed.stats["requests"] == n - 9 and resumed.stats["cache_hits"] >= 9
        pd.testing.assert_frame_equal(df, df3)
        assert cache.read_text().count("\n") == n


def test_requests_in_flight_are_bounded(planted, one_thread):
    peak = [0]
    with JudgeServer(responder(peak, delay=0.05)) as server:
        ex = _explainer(server, concurrency=2)
        explain_neurons(planted, [(0, NEURON)], TEXTS, ex, **{**RUN, "n_random": 1})
        assert len(server.requests) == 2 + 2 * 5 and peak[0] == 2


def test_endpoint_errors(planted, monkeypatch, one_thread):
    from fake_openai_server import Reply

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("MECHVALUE_EXPLAIN_MODEL", raising=False)
    with pytest.raises(ExplainError, match="no explainer endpoint configured"):
        Explainer()
    with pytest.raises(ExplainError, match="concurrency >= 1"):
        Explainer("http://127.0.0.1:1/v1", "m", concurrency=0)
    recs = neuron_records(planted, 0, NEURON, TEXTS, n_explain=4, n_top_holdout=3, n_random_holdout=2, max_length=24)
    with JudgeServer(responder()) as server:
        ex = _explainer(server)
        server.enqueue(Reply("invalid API key", status=401))
        with pytest.raises(ExplainError, match="HTTP 401.*API key"):
            ex.explain(recs)
        assert len(server.requests) == 1  # a 401 is not retried
        server.enqueue(JudgeReply(raw="this is not JSON"), JudgeReply(raw='{"choices": []}'))
        with pytest.raises(ExplainError, match="1 of 1 explain requests failed after their retry budgets"):
            ex.explain(recs)
        assert ex.stats["malformed"] == 2 and ex.stats["failed"] == 1
        server.enqueue(JudgeReply(""), JudgeReply("**"), JudgeReply("   "))  # no explanation: re-asked, then kept
        assert ex.explain(recs) == "" and ex.stats["unusable"] == 3 and ex.stats["kept_unusable"] == 1
        df = explain_neurons(planted, [(0, NEURON)], TEXTS, ex, **{**RUN, "n_random": 0})  # cached: ""
        assert df.explanation[0] == "" and math.isnan(df.score[0]) and df.note[0] == "no explanation"
        assert ex.explain(recs.explanation[:1]) == "the word banana"  # another prompt: a fresh request
        preds = ex.simulate("the word banana", recs)
        assert len(preds) == 5 and all(p.shape == (len(r.tokens),) for p, r in zip(preds, recs.simulation))
        assert any(float(p.max()) == 10.0 for p in preds)


# ---------------------------------------------------------------- command line


def test_cli_help(capsys):
    assert main(["explain", "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "mechvalue explain --layer" in out and "--neuron-class" in out


def _files(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00garbage" * 10)
    (tmp_path / "run" / "dual").mkdir(parents=True)
    (tmp_path / "norun").mkdir()
    pd.DataFrame({"value": ["power", "power", "benevolence"], "layer": [2, 2, 2], "neuron": [5, 9, 5],
                  "class": ["shared", "shared", "prompted"], "angle": [1.0, 2.0, 3.0], "proj_norm": [0.5, 0.9, 0.7],
                  "x": [0.0] * 3, "y": [0.0] * 3}).to_csv(tmp_path / "run" / "dual" / "neuron_classes.csv",
                                                          index=False)
    return tmp_path


EP = ["--base-url", "http://127.0.0.1:9/v1", "--explainer-model", "m"]
BAD = [
    (["explain", *EP], "give exactly one target", 2),
    (["explain", "--layer", "1", "--neuron", "2", "--neurons", "{t}/x.safetensors", "--top", "1", *EP],
     "give exactly one target", 2),
    (["explain", "--layer", "1", *EP], "--layer and --neuron go together", 2),
    (["explain", "--neurons", "{t}/x.safetensors", *EP], "--neurons needs --top K", 2),
    (["explain", "--run", "{t}/run", "--top", "2", *EP], "--run needs --neuron-class", 2),
    (["explain", "--run", "{t}/run", "--neuron-class", "other", "--top", "2", *EP], "invalid choice: 'other'", 2),
    (["explain", "--layer", "1", "--neuron", "2", "--top", "3", *EP], "--top does not apply", 2),
    (["explain", "--layer", "1", "--neuron", "2", "--concurrency", "0", *EP], "--concurrency must be >= 1", 2),
    (["explain", "--layer", "1", "--neuron", "-2", *EP], "--neuron must be >= 0", 2),
    (["explain", "--layer", "1", "--neuron", "2"], "no explainer endpoint configured", 2),
    (["explain", "--run", "{t}/run", "--neuron-class", "shared", "--top", "1", "--value", "kindness", *EP],
     "unknown value 'kindness'", 2),
    (["explain", "--neurons", "{t}/missing.safetensors", "--top", "1", *EP], "no such file", 1),
    (["explain", "--neurons", "{t}/corrupt.safetensors", "--top", "1", *EP], "not a readable safetensors", 1),
    (["explain", "--run", "{t}/norun", "--neuron-class", "shared", "--top", "1", *EP], "no such file", 1),
    (["explain", "--run", "{t}/run", "--neuron-class", "intrinsic", "--top", "1", *EP], "no intrinsic neurons", 1),
    (["explain", "--layer", "1", "--neuron", "2", "--texts", "{t}/empty.txt", *EP], "file has no texts", 1),
]


@pytest.mark.parametrize(("argv", "message", "status"), BAD, ids=[" ".join(a[1:4]) + f" {m[:20]}" for a, m, _ in BAD])
def test_cli_bad_input_is_a_one_line_error(argv, message, status, tmp_path, capsys, no_model, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("MECHVALUE_EXPLAIN_MODEL", raising=False)
    t = _files(tmp_path)
    assert main([a.replace("{t}", str(t)) for a in argv]) == status
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("mechvalue: error:") and message in err, err


def test_cli_on_tiny_model_against_fake_server(tiny, tmp_path, capsys, one_thread):
    from mechvalue.analysis.neurons import NeuronSet

    t = _files(tmp_path)
    (t / "mine.jsonl").write_text("".join(json.dumps({"text": x}) + "\n" for x in TEXTS[:8]))
    small = ["--n-texts", "6", "--random", "1", "--n-explain", "3", "--n-top-holdout", "2", "--n-random-holdout", "1",
             "--max-length", "16", "--texts", str(t / "mine.jsonl")]
    with JudgeServer(responder()) as server:
        ep = ["--base-url", server.base_url, "--explainer-model", "fake-explainer"]
        out = t / "out"
        assert main(["explain", "--layer", "2", "--neuron", "5", *ep, *small, "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "difference" in printed and "target" in printed
        df = pd.read_csv(out / "explanations.csv")
        assert list(df.kind) == ["target", "random"] and (df.layer == 2).all() and df["index"][0] == 5
        info = json.loads((out / "summary.json").read_text())
        sent = len(server.requests)  # 2 explanations, 3 simulation texts each (a repeated prompt is sent once)
        assert info["summary"]["target"]["n"] == 1 and info["n_texts"] == 14 and info["stats"]["requests"] == sent
        assert 2 + 3 <= sent <= 2 + 2 * 3 and (out / "cache.jsonl").read_text().count("\n") == sent
        assert main(["explain", "--layer", "2", "--neuron", "5", *ep, *small, "--out", str(out), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert len(server.requests) == sent and doc["stats"]["cache_hits"] == 2 + 2 * 3 and len(doc["rows"]) == 2

        scores = torch.tensor([0.1, -3.0, 2.0])
        path = NeuronSet(torch.tensor([1, 2, 3]), torch.tensor([4, 6, 8]), scores, torch.tensor([1, -1, 1])).save(
            t / "n.safetensors")
        assert main(["explain", "--neurons", str(path), "--top", "2", *ep, *small, "--out", str(t / "o2")]) == 0
        df = pd.read_csv(t / "o2" / "explanations.csv")
        assert list(zip(df.layer, df["index"]))[:2] == [(2, 6), (3, 8)] and set(df.layer[2:]) <= {2, 3}
        argv = ["explain", "--run", str(t / "run"), "--neuron-class", "shared", "--value", "PO", "--top", "5", *ep]
        assert main([*argv, *small, "--out", str(t / "o3")]) == 0
        df = pd.read_csv(t / "o3" / "explanations.csv")
        assert list(zip(df.layer, df["index"]))[:2] == [(2, 9), (2, 5)] and list(df.kind).count("target") == 2
        capsys.readouterr()
        assert main(["explain", "--layer", "2", "--neuron", "48", *ep, *small, "--out", str(t / "o4")]) == 2
        assert "neuron index 48 does not exist: layer 2 has 48 neurons" in capsys.readouterr().err


# ---------------------------------------------------------------- optional: a real llama.cpp server


@pytest.mark.model
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                    reason="llama-cpp-python is not installed (pip install 'llama-cpp-python[server]' to run "
                           "the end-to-end explanation test against a real OpenAI-compatible server)")
def test_explain_against_llama_cpp_server(smollm, tmp_path):
    from mechvalue.evaluate.audit import default_texts
    from mechvalue.lm.models import offline_gguf_path

    with llama_cpp_server(offline_gguf_path(), tmp_path / "server.log") as base:
        cfg = ClientConfig(base, "smollm2", timeout=300)
        ex = Explainer(base, "smollm2", "none", cache=tmp_path / "cache.jsonl", concurrency=1, max_tokens=24,
                       sim_max_tokens=160, config=cfg)
        df = explain_neurons(smollm, [(smollm.cfg.n_layers // 2, 7)], default_texts(8), ex, n_random=1,
                             n_explain=3, n_top_holdout=1, n_random_holdout=1, max_length=20, progress=False)
        assert list(df.kind) == ["target", "random"] and ex.stats["requests"] >= 2
        for r in df.itertuples():
            assert isinstance(r.explanation, str)
            assert math.isfinite(r.score) or (math.isnan(r.score) and r.note), r
        assert df.explanation.str.len().gt(0).any(), df
        print("\nllama.cpp explanations: " + "; ".join(f"{r.kind} L{r.layer}.{r.index}: {r.explanation!r} -> "
                                                      f"{r.score:.3f} {r.note}" for r in df.itertuples()))
        requests = ex.stats["requests"]
        explain_neurons(smollm, [(smollm.cfg.n_layers // 2, 7)], default_texts(8), ex, n_random=1, n_explain=3,
                        n_top_holdout=1, n_random_holdout=1, max_length=20, progress=False)
        assert ex.stats["requests"] == requests  # cached
