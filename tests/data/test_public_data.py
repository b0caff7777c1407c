"""Loaders for public data read by path from ../shared/data (never copied into the repository)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mechvalue.core.errors import DataError, MechvalueError
from mechvalue.core.values import DISPLAY, VALUES
from mechvalue.data.bundled import PortraitItem
from mechvalue.data.public import (
    FACE_HUMILITY,
    MMLU_LETTERS,
    PVQ40_KEY,
    REFINED_CODES,
    REFINED_TO_BASIC,
    REFINED_VALUES,
    TOUCHE_LABELS,
    TOUCHE_TO_VALUE,
    MMLUQuestion,
    canonical_refined,
    format_mmlu_prompt,
    load_mmlu,
    load_pvq40,
    load_pvq_rr,
    load_touche,
    pvq_key,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.exists():
        pytest.skip(f"public data {path} not present (see the loader docstrings for where to obtain it)")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


# ---------------------------------------------------------------- PVQ-40


def test_pvq40_key_constant_covers_40_items_once():
    items = sorted(i for v in PVQ40_KEY.values() for i in v)
    assert items == list(range(1, 41))
    assert set(PVQ40_KEY) == set(VALUES)


def test_load_pvq40():
    items = load_pvq40(shared("pvq40/pvq40_items.csv"))
    assert len(items) == 40
    assert [i.id for i in items[:2]] == ["pvq40-01", "pvq40-02"]
    assert all(isinstance(i, PortraitItem) for i in items)
    assert {i.person for i in items} == {"first"}
    assert pvq_key(items) == PVQ40_KEY
    assert items[1].value == "power" and "rich" in items[1].text
    assert all(i.text and i.refined is None for i in items)


def test_pvq40_corrupted_key_raises(tmp_path):
    header, rows = read_rows(shared("pvq40/pvq40_items.csv"))
    rows[0][header.index("value")] = "Power"  # item 1 is self-direction
    bad = write_csv(tmp_path / "pvq40.csv", header, rows)
    with pytest.raises(DataError, match=r"item 1: power \(key: self_direction\)"):
        load_pvq40(bad)


def test_pvq40_bad_files(tmp_path):
    src = shared("pvq40/pvq40_items.csv")
    with pytest.raises(DataError, match="no such file"):
        load_pvq40(tmp_path / "missing.csv")
    header, rows = read_rows(src)
    with pytest.raises(DataError, match="expected items 1..40"):
        load_pvq40(write_csv(tmp_path / "short.csv", header, rows[:-1]))
    with pytest.raises(DataError, match="wording column"):
        load_pvq40(write_csv(tmp_path / "nowords.csv", ["item", "value"], [r[:2] for r in rows]))
    unknown = [r[:] for r in rows]
    unknown[4][1] = "Wealth"
    with pytest.raises(DataError, match="item 5: unknown value 'Wealth'"):
        load_pvq40(write_csv(tmp_path / "unknown.csv", header, unknown))


def test_pvq40_third_person_detected(tmp_path):
    rows = [[n, v, f"It is important to him to value {v}. He cares about it."]
            for v, items in PVQ40_KEY.items() for n in items]
    items = load_pvq40(write_csv(tmp_path / "third.csv", ["item", "value", "text"], rows))
    assert {i.person for i in items} == {"third"}
    assert [i.item for i in items] == list(range(1, 41))


# ---------------------------------------------------------------- PVQ-RR (synthetic)


def rr_rows(spelling=lambda r: r.replace("_", " ").title()) -> list[list[object]]:
    return [[n, spelling(REFINED_VALUES[(n - 1) % 19]), f"It is important to me to honour item {n}."]
            for n in range(1, 58)]


def test_refined_mapping_complete():
    assert len(REFINED_VALUES) == 19 and set(REFINED_TO_BASIC) == set(REFINED_VALUES)
    assert set(REFINED_TO_BASIC.values()) == set(VALUES)
    assert canonical_refined("Self-direction: thought") == "self_direction_thought"
    assert canonical_refined("POD") == "power_dominance"
    with pytest.raises(MechvalueError, match="unknown refined value"):
        canonical_refined("objectivity")


def test_load_pvq_rr_default_maps_face_humility(tmp_path):
    items = load_pvq_rr(write_csv(tmp_path / "rr.csv", ["item", "value", "text"], rr_rows()))
    assert len(items) == 57 and items[0].id == "pvqrr-01" and items[0].person == "first"
    by_refined = {}
    for it in items:
        by_refined.setdefault(it.refined, set()).add(it.value)
    assert by_refined["face"] == {"power"} and by_refined["humility"] == {"tradition"}
    assert by_refined["self_direction_action"] == {"self_direction"}
    assert by_refined["universalism_tolerance"] == {"universalism"}
    key = pvq_key(items)
    assert len(key["power"]) == 9 and len(key["tradition"]) == 6 and len(key["universalism"]) == 9


def test_load_pvq_rr_codes_exclude_and_custom(tmp_path):
    path = write_csv(tmp_path / "rr.csv", ["item", "value", "text"], rr_rows(lambda r: REFINED_CODES[r]))
    excluded = load_pvq_rr(path, face_humility="exclude")
    assert len(excluded) == 51 and not {"face", "humility"} & {i.refined for i in excluded}
    custom = load_pvq_rr(path, face_humility={"Face": "security", "HUM": "conformity"})
    assert {i.value for i in custom if i.refined == "face"} == {"security"}
    assert {i.value for i in custom if i.refined == "humility"} == {"conformity"}
    with pytest.raises(DataError, match="face_humility must be"):
        load_pvq_rr(path, face_humility="nearest")
    with pytest.raises(DataError, match="needs the keys face, humility"):
        load_pvq_rr(path, face_humility={"face": "power"})


def test_load_pvq_rr_errors(tmp_path):
    rows = rr_rows()
    with pytest.raises(DataError, match="no such file"):
        load_pvq_rr(tmp_path / "absent.csv")
    with pytest.raises(DataError, match=r"missing \['text'\]"):
        load_pvq_rr(write_csv(tmp_path / "cols.csv", ["item", "value", "wording"], rows))
    rows[0][1] = "Self-direction action"  # item 1 was self-direction thought: counts now 2 and 4
    with pytest.raises(DataError, match="3 items per refined value"):
        load_pvq_rr(write_csv(tmp_path / "counts.csv", ["item", "value", "text"], rows))
    rows[0][1] = "Objectivity"
    with pytest.raises(DataError, match="item 1: unknown refined value"):
        load_pvq_rr(write_csv(tmp_path / "unknown.csv", ["item", "value", "text"], rows))


# ---------------------------------------------------------------- Touché23-ValueEval


def test_touche_mapping_is_convas_substring_rule():
    for v in VALUES:
        assert TOUCHE_TO_VALUE[v] == [lab for lab in TOUCHE_LABELS if DISPLAY[v].lower() in lab.lower()]
        assert TOUCHE_TO_VALUE[v], v
    used = [lab for labs in TOUCHE_TO_VALUE.values() for lab in labs]
    assert sorted(used) == sorted(set(TOUCHE_LABELS) - {"Face", "Humility"})
    assert "Universalism: objectivity" in TOUCHE_TO_VALUE["universalism"]


@pytest.mark.parametrize(("split", "n"), [("training", 5393), ("validation", 1896)])
def test_load_touche_counts(split, n):
    df = load_touche(shared("touche23_valueeval"), split)
    assert len(df) == n and df["argument_id"].is_unique
    assert list(df.columns) == ["argument_id", "conclusion", "stance", "premise", *TOUCHE_LABELS, *VALUES]
    assert set(df["stance"]) <= {"in favor of", "against"}
    for v in VALUES:
        assert (df[v] == df[TOUCHE_TO_VALUE[v]].max(axis=1)).all()


def test_touche_validation_sanity():
    df = load_touche(shared("touche23_valueeval"), "validation")
    assert (df[list(VALUES)].sum() > 0).all()
    assert df.set_index("argument_id").loc["A01001", "Security: societal"] == 1
    assert df.set_index("argument_id").loc["A01001", "security"] == 1
    only_face = df[(df["Face"] == 1) & (df[[c for c in TOUCHE_LABELS if c != "Face"]].sum(axis=1) == 0)]
    assert (only_face[list(VALUES)].sum(axis=1) == 0).all()
    with_fh = load_touche(shared("touche23_valueeval"), "validation", include_face_humility=True)
    basic, label = FACE_HUMILITY["face"], "Face"
    assert (with_fh.loc[with_fh[label] == 1, basic] == 1).all()
    assert (with_fh.loc[with_fh["Humility"] == 1, FACE_HUMILITY["humility"]] == 1).all()
    assert with_fh[basic].sum() >= df[basic].sum()
    unchanged = [v for v in VALUES if v not in FACE_HUMILITY.values()]
    assert (with_fh[unchanged] == df[unchanged]).all().all()


def _small_touche(tmp_path: Path, args: int = 5, labels: int = 5, edit=lambda lines: lines) -> Path:
    """The first rows of the validation files in tmp_path, labels passed through ``edit``."""
    src = shared("touche23_valueeval")
    for kind, n in (("arguments", args), ("labels", labels)):
        lines = (src / f"{kind}-validation.tsv").read_text(encoding="utf-8").splitlines()[: n + 1]
        lines = edit(lines) if kind == "labels" else lines
        (tmp_path / f"{kind}-validation.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


def test_touche_errors(tmp_path):
    with pytest.raises(DataError, match="split must be one of"):
        load_touche(shared("touche23_valueeval"), "train")
    with pytest.raises(DataError, match="no such folder"):
        load_touche(tmp_path / "nowhere")
    with pytest.raises(DataError, match="arguments-test.tsv: no such file"):
        load_touche(shared("touche23_valueeval"), "test")
    assert len(load_touche(_small_touche(tmp_path), "validation")) == 5
    with pytest.raises(DataError, match="ids differ"):
        load_touche(_small_touche(tmp_path, labels=4), "validation")

    def two(lines: list[str]) -> list[str]:
        return [*lines[:-1], lines[-1].replace("\t0", "\t2", 1)]

    with pytest.raises(DataError, match="labels must be 0 or 1"):
        load_touche(_small_touche(tmp_path, edit=two), "validation")

    def renamed(lines: list[str]) -> list[str]:
        return [lines[0].replace("Face\t", "Faces\t"), *lines[1:]]

    with pytest.raises(DataError, match=r"missing \['Face'\]"):
        load_touche(_small_touche(tmp_path, edit=renamed), "validation")

    def dup(lines: list[str]) -> list[str]:
        return [*lines, lines[-1]]

    with pytest.raises(DataError, match="duplicate argument ids"):
        load_touche(_small_touche(tmp_path, edit=dup), "validation")


# ---------------------------------------------------------------- MMLU


@pytest.mark.parametrize(("name", "n"), [("mmlu_dev.csv", 285), ("mmlu_validation.csv", 1531)])
def test_load_mmlu_csv(name, n):
    qs = load_mmlu(shared(f"mmlu/{name}"))
    assert len(qs) == n
    assert all(isinstance(q, MMLUQuestion) and q.answer in range(4) and len(q.choices) == 4 for q in qs)
    assert len({q.subject for q in qs}) == 57
    assert len({q.answer for q in qs}) == 4


def test_mmlu_first_dev_question_and_prompt():
    qs = load_mmlu(shared("mmlu/mmlu_dev.csv"))
    q = qs[0]
    assert q.subject == "abstract_algebra" and q.choices == ("0", "1", "2", "3") and q.answer == 1
    prompt = format_mmlu_prompt(q)
    assert prompt.startswith("The following are multiple choice questions (with answers) about abstract "
                             "algebra.\n\n")
    assert prompt.endswith("\nD. 3\nAnswer:")
    assert all(f"\n{letter}. " in prompt for letter in MMLU_LETTERS)
    few = format_mmlu_prompt(q, examples=qs[1:3])
    assert few.count("Answer:") == 3 and few.endswith("Answer:")
    assert f"Answer: {MMLU_LETTERS[qs[1].answer]}\n\n" in few


def test_mmlu_errors(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_mmlu(tmp_path / "mmlu.csv")
    header = ["subject", "question", "A", "B", "C", "D", "answer"]
    with pytest.raises(DataError, match="answer must be A-D or 0-3, not 'E'"):
        load_mmlu(write_csv(tmp_path / "bad.csv", header, [["x", "q?", "1", "2", "3", "4", "E"]]))
    with pytest.raises(DataError, match=r"missing \['D'\]"):
        load_mmlu(write_csv(tmp_path / "cols.csv", [*header[:5], "answer"], [["x", "q", "1", "2", "3", "B"]]))
    with pytest.raises(DataError, match=r"ragged.csv:3: wrong number of fields"):
        load_mmlu(write_csv(tmp_path / "ragged.csv", header, [["x", "q", *"1234", "A"], ["x", "q", "1"]]))
    ok = load_mmlu(write_csv(tmp_path / "num.csv", header, [["x", "q?", "1", "2", "3", "4", "3"]]))
    assert ok[0].answer == 3
    with pytest.raises(DataError, match="no Hugging Face save_to_disk folders"):
        load_mmlu(tmp_path, split="test")
    with pytest.raises(DataError, match="4 string choices"):
        MMLUQuestion("x", "q", ("a", "b", "c"), 0)  # type: ignore[arg-type]


def test_mmlu_arrow_folders_match_csv(tmp_path):
    datasets = pytest.importorskip("datasets", reason="writing Arrow test folders needs `datasets`")
    csv_qs = load_mmlu(shared("mmlu/mmlu_dev.csv"))
    features = datasets.Features({
        "question": datasets.Value("string"), "subject": datasets.Value("string"),
        "choices": datasets.Sequence(datasets.Value("string")),
        "answer": datasets.ClassLabel(names=list(MMLU_LETTERS)),
    })
    root = tmp_path / "hails" / "mmlu_no_train"
    subjects = sorted({q.subject for q in csv_qs})[:3]
    for s in subjects:
        qs = [q for q in csv_qs if q.subject == s]
        ds = datasets.Dataset.from_dict({"question": [q.question for q in qs], "subject": [s] * len(qs),
                                         "choices": [list(q.choices) for q in qs],
                                         "answer": [q.answer for q in qs]}, features=features)
        ds.save_to_disk(str(root / s / "dev"))
    expected = [q for q in csv_qs if q.subject in subjects]
    assert load_mmlu(root, split="dev") == expected
    assert load_mmlu(root / subjects[0] / "dev") == [q for q in expected if q.subject == subjects[0]]
    with pytest.raises(DataError, match="needs split="):
        load_mmlu(root)
