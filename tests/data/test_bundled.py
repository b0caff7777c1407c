"""Acceptance of the bundled data in data/, loader validation, and the context-bias check."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest

from mechvalue.core.errors import DataError
from mechvalue.core.values import DIMENSION_WEIGHTS, DIMENSIONS, VALUES
from mechvalue.data.bundled import (
    ContrastPair,
    Query,
    SystemPrompt,
    check_data,
    content_words,
    context_bias,
    data_dir,
    load_descriptions,
    load_dilemmas,
    load_pairs,
    load_portraits,
    load_queries,
    load_scenarios,
    load_system_prompts,
    read_jsonl,
)


@pytest.fixture(scope="module")
def report():
    return check_data().set_index("value")


def test_data_dir_is_the_repository_folder():
    root = data_dir()
    assert (root / "pairs").is_dir() and (root / "README.md").exists()


# ----------------------------------------------------------------------------- acceptance


@pytest.mark.parametrize("value", VALUES)
def test_per_value_counts_and_integrity(value):
    pairs = load_pairs(value)
    assert len(pairs) >= 100
    assert all(p.value == value for p in pairs)
    assert all(p.positive.strip() != p.negative.strip() for p in pairs)
    assert len({p.id for p in pairs}) == len(pairs)
    # the value's own name never appears in the pairs (the probe must not learn the word)
    name = re.compile(r"\b" + value.replace("_", "[- ]") + r"\b", re.I)
    assert not [p.id for p in pairs if name.search(p.positive + " " + p.negative)]

    prompts = load_system_prompts(value)
    assert len(prompts) >= 20
    assert len({s.text for s in prompts}) == len(prompts)

    dilemmas = load_dilemmas(value)
    assert len(dilemmas) >= 30
    assert all(d.conflict_value in VALUES and d.conflict_value != value for d in dilemmas)
    assert len({d.conflict_value for d in dilemmas}) >= 4
    assert all(d.value_answer != d.conflict_answer for d in dilemmas)

    assert len(load_portraits(value)) >= 4


@pytest.mark.parametrize("value", VALUES)
def test_fixed_split_is_about_70_30(value):
    pairs = load_pairs(value)
    train, test = load_pairs(value, split="train"), load_pairs(value, split="test")
    assert len(train) + len(test) == len(pairs)
    assert {p.id for p in train}.isdisjoint({p.id for p in test})
    assert 0.65 <= len(train) / len(pairs) <= 0.75
    # the first ~70% by id is train
    assert max(p.id for p in train) < min(p.id for p in test)


def test_queries():
    queries = load_queries()
    assert len(queries) >= 300
    assert [q.id for q in queries] == sorted(q.id for q in queries)
    assert len({q.id for q in queries}) == len(queries)
    texts = [" ".join(q.text.lower().split()) for q in queries]
    assert len(set(texts)) == len(texts)
    counts = Counter(q.category for q in queries)
    assert len(counts) >= 4 and min(counts.values()) >= 10


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_valuelocate_material(dimension):
    descriptions = load_descriptions(dimension)
    questions = load_scenarios(dimension)
    assert len(descriptions) >= 60
    assert len(questions) >= 200
    members = set(DIMENSION_WEIGHTS[dimension]) - {"hedonism"}  # hedonism is left out on purpose
    by_id = {d.id: d for d in descriptions}
    for rows in (descriptions, questions):
        assert all(r.dimension == dimension for r in rows)
        assert {r.basic_value for r in rows} == members  # every basic value of the dimension, nothing else
    for q in questions:
        assert by_id[q.description_id].atomic_value == q.atomic_value
        assert by_id[q.description_id].basic_value == q.basic_value
    # balance across basic values: none has less than half the share of another
    counts = Counter(q.basic_value for q in questions)
    assert min(counts.values()) >= 0.5 * max(counts.values())


def test_check_data_context_bias_and_duplicates(report):
    assert list(report.index) == list(VALUES)
    assert (report["context_bias"] <= 0.5).all(), report["context_bias"].to_dict()
    assert (report["duplicate_pairs"] == 0).all()
    assert (report["duplicate_dilemmas"] == 0).all()
    assert (report["pairs"] == report["pairs_train"] + report["pairs_test"]).all()
    for value in VALUES:
        pairs = load_pairs(value)
        direct = context_bias([p.positive for p in pairs], [p.negative for p in pairs])
        assert report.loc[value, "context_bias"] == pytest.approx(direct.share, abs=1e-3)
        assert report.loc[value, "pairs"] == len(pairs)


# ----------------------------------------------------------------------------- validation errors

GOOD = {"id": "p1", "value": "power", "positive": "She took charge.", "negative": "She stepped back.",
        "split": "train"}


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _row(**changes):
    row = {**GOOD, **changes}
    return json.dumps({k: v for k, v in row.items() if v is not None})


@pytest.mark.parametrize("lines, lineno, message", [
    ([_row(), "{not json"], 2, "invalid JSON"),
    ([_row(), _row(id="p2", split=None)], 2, "missing \\['split'\\]"),
    ([_row(extra="x")], 1, "unexpected \\['extra'\\]"),
    ([_row(), _row(id="p2"), _row(id="p3", value="greed")], 3, "unknown value 'greed'"),
    ([_row(), _row(id="p2"), _row()], 3, "duplicate id 'p1'"),
    ([_row(positive="  ")], 1, "'positive' must be a non-empty string"),
    ([_row(positive=3)], 1, "'positive' must be a non-empty string"),
    ([_row(split="dev")], 1, "split must be one of"),
    (["[1, 2]"], 1, "expected a JSON object"),
])
def test_malformed_lines_name_file_and_line(tmp_path, lines, lineno, message):
    path = _write(tmp_path / "pairs" / "power.jsonl", lines)
    with pytest.raises(DataError, match=f"{re.escape(str(path))}:{lineno}: .*{message}"):
        read_jsonl(path, ContrastPair)
    # the per-value loaders surface the same error
    with pytest.raises(DataError, match=f"power.jsonl:{lineno}:"):
        load_pairs("power", root=tmp_path)


def test_blank_lines_are_skipped_but_counted(tmp_path):
    path = _write(tmp_path / "x.jsonl", [_row(), "", _row(id="p2", value="nope")])
    with pytest.raises(DataError, match=r"x\.jsonl:3:"):
        read_jsonl(path, ContrastPair)


def test_other_loader_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl", ContrastPair)
    with pytest.raises(DataError, match="no records"):
        read_jsonl(_write(tmp_path / "empty.jsonl", [""]), ContrastPair)
    # canonicalises spellings on load
    (row,) = read_jsonl(_write(tmp_path / "sp.jsonl", [json.dumps({"id": "s", "value": "SD", "text": "t"})]),
                        SystemPrompt)
    assert row.value == "self_direction"
    # a file holding records of another value
    _write(tmp_path / "pairs" / "power.jsonl", [_row(value="hedonism")])
    with pytest.raises(DataError, match="another value"):
        load_pairs("power", root=tmp_path)
    with pytest.raises(DataError, match="split"):
        load_pairs("power", split="validation", root=tmp_path)
    # dilemmas: conflict equal to the value
    dil = {"id": "d", "value": "power", "question": "q?", "value_answer": "a", "conflict_value": "PO",
           "conflict_answer": "b"}
    with pytest.raises(DataError, match=r"d\.jsonl:1: conflict_value equals value"):
        read_jsonl(_write(tmp_path / "d.jsonl", [json.dumps(dil)]), type(load_dilemmas("power")[0]))
    # queries: duplicate ids across files
    q = json.dumps({"id": "q1", "category": "advice", "text": "Any tips?"})
    _write(tmp_path / "queries" / "a.jsonl", [q])
    _write(tmp_path / "queries" / "b.jsonl", [q])
    with pytest.raises(DataError, match="duplicate query ids"):
        load_queries(root=tmp_path)
    assert read_jsonl(tmp_path / "queries" / "a.jsonl", Query)[0].id == "q1"
    with pytest.raises(DataError, match="no query files"):
        load_queries(root=tmp_path / "nowhere")


def test_broken_description_link(tmp_path):
    desc = {"id": "d1", "dimension": "OPEN", "basic_value": "SD", "atomic_value": "freedom",
            "description": "You love freedom."}
    q = {"id": "q1", "dimension": "openness_to_change", "basic_value": "self_direction",
         "atomic_value": "freedom", "description_id": "d2", "question": "What now?"}
    _write(tmp_path / "valuelocate" / "descriptions" / "openness_to_change.jsonl", [json.dumps(desc)])
    _write(tmp_path / "valuelocate" / "questions" / "openness_to_change.jsonl", [json.dumps(q)])
    assert load_descriptions("openness", root=tmp_path)[0].dimension == "openness_to_change"
    with pytest.raises(DataError, match="unknown descriptions"):
        load_scenarios("OPEN", root=tmp_path)


# ----------------------------------------------------------------------------- context bias

PERSONS = ["Ana", "Ben", "Chloe", "Dev", "Eva", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kemal", "Lena"]
PLACES = ["kitchen", "office", "garden", "station", "library", "market", "harbour", "school", "clinic", "bakery",
          "theatre", "museum"]
OBJECTS = ["report", "bicycle", "letter", "recipe", "ticket", "painting", "contract", "lantern", "blanket",
           "notebook", "camera", "kettle"]
POS_VERBS = ["protected", "defended", "safeguarded"]
NEG_VERBS = ["ignored", "dropped", "misplaced"]
NAIVE_POS = ["charity", "donation", "volunteer", "kindness", "compassion", "generosity", "caring", "helping",
             "neighbour", "shelter", "hospital", "orphan", "elderly", "refugee", "community", "support", "gift",
             "meal", "comfort", "friendship", "empathy", "mercy", "forgiveness", "patience", "gratitude",
             "service", "hope"]
NAIVE_NEG = ["engine", "spreadsheet", "weather", "traffic", "printer", "database", "mountain", "football",
             "airport", "concrete", "battery", "satellite", "highway", "furniture", "keyboard", "tractor",
             "electricity", "plumbing", "carpet", "window", "ceiling", "software", "timetable", "container",
             "warehouse", "cable", "voltage"]


def _controlled_pairs(rng, n=120):
    pos, neg = [], []
    for _ in range(n):
        person, place, obj = rng.choice(PERSONS), rng.choice(PLACES), rng.choice(OBJECTS)
        pos.append(f"In the {place}, {person} {rng.choice(POS_VERBS)} the {obj}.")
        neg.append(f"In the {place}, {person} {rng.choice(NEG_VERBS)} the {obj}.")
    return pos, neg


def _naive_pairs(rng, n=120):
    pos = [" ".join(rng.sample(NAIVE_POS, 6)) for _ in range(n)]
    neg = [" ".join(rng.sample(NAIVE_NEG, 6)) for _ in range(n)]
    return pos, neg


def test_context_bias_naive_vs_controlled():
    rng = random.Random(0)
    naive = context_bias(*_naive_pairs(rng))
    controlled = context_bias(*_controlled_pairs(rng))
    assert naive.share > 0.8
    assert controlled.share < 0.5
    assert naive.share > controlled.share
    # in the controlled data only the value-bearing verbs are one-sided
    assert set(controlled.positive_only) <= set(POS_VERBS)
    assert set(controlled.negative_only) <= set(NEG_VERBS)
    assert set(controlled.positive_only) == set(POS_VERBS)
    assert controlled.k == 25
    # identical sides have no bias at all
    same = ["The cat sat on the warm mat near the door."] * 5
    assert context_bias(same, same).share == 0.0


def test_context_bias_k_and_errors():
    rng = random.Random(1)
    pos, neg = _naive_pairs(rng)
    small = context_bias(pos, neg, k=5)
    assert small.k == 5 and len(small.positive_only) <= 5 and len(small.negative_only) <= 5
    assert small.share == pytest.approx((len(small.positive_only) + len(small.negative_only)) / 10)
    with pytest.raises(DataError, match="non-empty"):
        context_bias([], ["x"])
    with pytest.raises(DataError, match="non-empty"):
        context_bias(["x"], [])


def test_content_words_drop_stop_words_and_short_words():
    words = content_words("The Cat and I are on a very big, BIG mat!")
    assert words == ["cat", "big", "big", "mat"]
