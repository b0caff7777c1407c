"""Bring your own data: ``judge --texts``, ``evaluate --dilemmas``, ``extract --pairs`` and ``run --data`` (small
files, malformed ones refused before any model loads, naming the line and the field)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mechvalue.cli.main import main
from mechvalue.core.values import VALUES
from mechvalue.data.bundled import USER_DATA, data_file, load_dilemmas, load_pairs, load_queries, using_data


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _dilemma(i, value="power", **kw):
    d = {"id": f"my-{i}", "value": value, "conflict_value": "universalism", "question": f"Should I lead team {i}?",
         "value_answer": "Yes, take charge.", "conflict_answer": "No, share the decision."}
    return {**d, **kw}


def _pair(i, split):
    return {"id": f"p{i}", "value": "power", "split": split,
            "positive": f"I want control over project {i}.", "negative": f"I let others decide project {i}."}


def test_judge_lexicon_scores_each_text_on_every_value(tmp_path, capsys, no_model):
    texts = _jsonl(tmp_path / "t.jsonl", [{"id": "a", "text": "I help my friends and care for my family."},
                                          {"id": "b", "text": "Wealth, status and power over others."}])
    assert main(["judge", "--texts", str(texts), "--judge", "lexicon", "--out", str(tmp_path / "s.csv")]) == 0
    df = pd.read_csv(tmp_path / "s.csv")
    assert list(df.columns) == ["id", "text", *VALUES] and list(df.id) == ["a", "b"]
    assert df.loc[0, "benevolence"] > df.loc[1, "benevolence"] and df.loc[1, "power"] > df.loc[0, "power"]
    assert ((df[list(VALUES)] >= 0) & (df[list(VALUES)] <= 1)).all().all()
    assert "mean score per value" in capsys.readouterr().out


def test_judge_plain_text_file_and_classifier_on_a_model(tiny, tmp_path, monkeypatch):
    from mechvalue.evaluate import judges

    class Fixed(judges.JudgeBase):
        name = "fixed"

        def judge_many(self, texts, values=None, *, questions=None):
            import numpy as np
            return np.full((len(texts), len(values)), 0.25)

    monkeypatch.setattr(judges.ClassifierJudge, "bundled", classmethod(lambda cls, model: Fixed()))
    texts = tmp_path / "t.txt"
    texts.write_text("first answer\n\nsecond answer\n")
    assert main(["judge", "--texts", str(texts), "--values", "power,BE", "--out", str(tmp_path / "s.csv")]) == 0
    df = pd.read_csv(tmp_path / "s.csv")
    assert list(df.columns) == ["id", "text", "power", "benevolence"] and list(df.id) == [1, 3]
    assert (df.power == 0.25).all()


BAD = [
    (["judge", "--texts", "{t}/none.txt", "--out", "{t}/o.csv"], "none.txt: no such file", 1),
    (["judge", "--texts", "{t}/bad.jsonl", "--out", "{t}/o.csv"], "bad.jsonl:2: each line must be an object with", 1),
    (["judge", "--texts", "{t}/empty.txt", "--out", "{t}/o.csv"], "file has no texts", 1),
    (["judge", "--texts", "{t}/ok.txt", "--values", "kindness", "--out", "{t}/o.csv"], "unknown value 'kindness'", 2),
    (["evaluate", "--value", "power", "--dilemmas", "{t}/dil_missing_key.jsonl"],
     "dil_missing_key.jsonl:2: keys must be", 1),
    (["evaluate", "--value", "power", "--dilemmas", "{t}/dil_bad_json.jsonl"], "dil_bad_json.jsonl:1: invalid JSON", 1),
    (["evaluate", "--value", "power", "--dilemmas", "{t}/dil_other.jsonl"],
     "no dilemmas of power (the file holds tradition)", 1),
    (["evaluate", "--value", "power", "--dilemmas", "{t}/dil_empty_field.jsonl"],
     "dil_empty_field.jsonl:1: 'question' must be a non-empty string", 1),
    (["extract", "--value", "power", "--pairs", "{t}/pairs_few.jsonl"], "need >= 4 train pairs and >= 1 test pair", 1),
    (["extract", "--value", "power", "--pairs", "{t}/pairs_split.jsonl"], "split must be one of", 1),
    (["run", "--data", "{t}/nowhere"], "data folder '{t}/nowhere' does not exist", 2),
    (["run", "--data", "{t}/own_badname"], "file names must be canonical value names", 2),
    (["run", "--data", "{t}/own_badline", "--out", "{t}/r"], "dilemmas/power.jsonl:2: keys must be", 2),
    (["run", "--data", "{t}/own_unknown"], "unknown sub-folders ['stuff']", 2),
    (["run", "--data", "{t}/own_empty"], "no JSONL files in the layout of data/", 2),
]


def _bad_files(t):
    _jsonl(t / "bad.jsonl", [{"text": "fine"}, {"txt": "oops"}])
    (t / "empty.txt").write_text("\n\n")
    (t / "ok.txt").write_text("hello\n")
    _jsonl(t / "dil_missing_key.jsonl", [_dilemma(0), {k: v for k, v in _dilemma(1).items() if k != "question"}])
    _jsonl(t / "dil_bad_json.jsonl", ['{"id": "x", '])
    _jsonl(t / "dil_other.jsonl", [_dilemma(0, value="tradition")])
    _jsonl(t / "dil_empty_field.jsonl", [_dilemma(0, question="  ")])
    _jsonl(t / "pairs_few.jsonl", [_pair(0, "train"), _pair(1, "test")])
    _jsonl(t / "pairs_split.jsonl", [{**_pair(0, "train"), "split": "dev"}])
    _jsonl(t / "own_badname" / "dilemmas" / "kindness.jsonl", [_dilemma(0)])
    _jsonl(t / "own_badline" / "dilemmas" / "power.jsonl", [_dilemma(0), {"id": "z"}])
    (t / "own_unknown" / "stuff").mkdir(parents=True)
    (t / "own_empty").mkdir()
    return t


@pytest.mark.parametrize(("argv", "message", "status"), BAD, ids=[" ".join(a[:3]) + f"-{i}" for i, (a, _, _) in
                                                                   enumerate(BAD)])
def test_malformed_user_files_are_refused_naming_line_and_field(argv, message, status, tmp_path, capsys, no_model):
    t = _bad_files(tmp_path)
    assert main([a.replace("{t}", str(t)) for a in argv]) == status
    err = capsys.readouterr().err.strip()
    assert err.startswith("mechvalue: error:") and "\n" not in err and message.replace("{t}", str(t)) in err, err


def test_evaluate_reads_the_users_dilemmas(tiny, tmp_path, capsys, one_thread):
    path = _jsonl(tmp_path / "mine.jsonl", [_dilemma(i) for i in range(5)] + [_dilemma(9, value="tradition")])
    assert main(["evaluate", "--value", "power", "--method", "prompt", "--dilemmas", str(path), "--max-items", "40",
                 "--out", str(tmp_path / "e.csv")]) == 0
    df = pd.read_csv(tmp_path / "e.csv").set_index("metric")
    assert df.loc["dilemma preference (nats)", "n"] == 5  # the user's five power dilemmas, not the bundled 36


def test_extract_trains_on_the_users_pairs(tiny, tmp_path, capsys, one_thread):
    path = _jsonl(tmp_path / "pairs.jsonl", [_pair(i, "train") for i in range(6)] + [_pair(9, "test"),
                                                                                    _pair(10, "test")])
    assert main(["extract", "--value", "power", "--pairs", str(path), "--out", str(tmp_path / "v.safetensors"),
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pairs"] == str(path) and data["n_test_pairs"] == 2


def test_using_data_overlays_the_users_files_and_restores(tmp_path):
    own = tmp_path / "own"
    _jsonl(own / "dilemmas" / "power.jsonl", [_dilemma(i) for i in range(3)])
    _jsonl(own / "queries" / "mine.jsonl", [{"id": "q1", "category": "food", "text": "What should I cook?"}])
    bundled_power = len(load_dilemmas("power"))
    with using_data(own) as files:
        assert len(files) == 2 and USER_DATA.get() == own.resolve()
        assert [d.id for d in load_dilemmas("power")] == ["my-0", "my-1", "my-2"]
        assert len(load_dilemmas("tradition")) > 30  # no user file: the bundled one
        assert data_file("pairs", "power") == data_file("pairs", "power", None)
        assert len(load_pairs("power")) > 100
        assert [q.id for q in load_queries()] == ["q1"]
    assert USER_DATA.get() is None and len(load_dilemmas("power")) == bundled_power


def test_run_data_changes_the_fingerprint(tmp_path):
    from mechvalue.pipeline.folder import data_fingerprint

    own = tmp_path / "own"
    _jsonl(own / "dilemmas" / "power.jsonl", [_dilemma(0)])
    before = data_fingerprint()
    with using_data(own):
        inside = data_fingerprint()
    assert inside != before and data_fingerprint() == before
