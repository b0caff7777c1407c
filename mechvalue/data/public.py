"""Loaders, by path, for public datasets that mechvalue uses but never bundles.

PVQ-40 (:func:`load_pvq40`, key :data:`PVQ40_KEY`), PVQ-RR (:func:`load_pvq_rr`), Touché23-ValueEval
(:func:`load_touche`) and MMLU (:func:`load_mmlu`, :func:`format_mmlu_prompt`). Each loader validates
the file and raises :class:`~mechvalue.core.errors.DataError` naming the path and what was expected; value
names are canonical (:func:`mechvalue.core.values.canonical`); docstrings say where to obtain the data.

Face and humility, refined values (Schwartz et al. 2012) with no basic parent (face lies between power
and security, humility between conformity/tradition and benevolence/universalism), follow one
convention, :data:`FACE_HUMILITY`: face -> power, humility -> tradition, where the Schwartz Value Survey
put their items ("preserving my public image" is an SVS power item, "humble" an SVS tradition item).
Face -> security or humility -> conformity/universalism are defensible too; :func:`load_pvq_rr` takes
a custom mapping.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechvalue.core.errors import DataError, MechvalueError
from mechvalue.core.values import DISPLAY, VALUES, canonical
from mechvalue.data.bundled import PortraitItem
from mechvalue.data.csv_rows import read_csv_rows
from mechvalue.data.mmlu import MMLU_LETTERS, MMLUQuestion, format_mmlu_prompt, load_mmlu

# MMLU lives in mechvalue.data.mmlu; its names stay importable from here
__all__ = ["FACE_HUMILITY", "MMLU_LETTERS", "PVQ40_KEY", "REFINED_CODES", "REFINED_TO_BASIC", "REFINED_VALUES",
           "TOUCHE_LABELS", "TOUCHE_SPLITS", "TOUCHE_TO_VALUE", "MMLUQuestion", "PVQItem", "canonical_refined",
           "format_mmlu_prompt", "load_mmlu", "load_pvq40", "load_pvq_rr", "load_touche", "pvq_key"]

# ---------------------------------------------------------------- PVQ (40 and RR)

#: standard PVQ-40 scoring key (Schwartz et al. 2001): value -> item numbers
PVQ40_KEY: dict[str, list[int]] = {
    "self_direction": [1, 11, 22, 34], "power": [2, 17, 39], "universalism": [3, 8, 19, 23, 29, 40],
    "achievement": [4, 13, 24, 32], "security": [5, 14, 21, 31, 35], "stimulation": [6, 15, 30],
    "conformity": [7, 16, 28, 36], "tradition": [9, 20, 25, 38], "hedonism": [10, 26, 37],
    "benevolence": [12, 18, 27, 33],
}

#: the 19 refined values of the PVQ-RR (Schwartz et al. 2012), circle order, with their codes
REFINED_CODES: dict[str, str] = {
    "self_direction_thought": "SDT", "self_direction_action": "SDA", "stimulation": "ST", "hedonism": "HE",
    "achievement": "AC", "power_dominance": "POD", "power_resources": "POR", "face": "FAC",
    "security_personal": "SEP", "security_societal": "SES", "tradition": "TR", "conformity_rules": "COR",
    "conformity_interpersonal": "COI", "humility": "HUM", "benevolence_caring": "BEC",
    "benevolence_dependability": "BED", "universalism_concern": "UNC", "universalism_nature": "UNN",
    "universalism_tolerance": "UNT",
}
REFINED_VALUES: tuple[str, ...] = tuple(REFINED_CODES)
#: face and humility -> basic value (see the module docstring for why)
FACE_HUMILITY: dict[str, str] = {"face": "power", "humility": "tradition"}
#: refined value -> basic value: the 17 with a basic parent, plus :data:`FACE_HUMILITY`
REFINED_TO_BASIC: dict[str, str] = {
    "self_direction_thought": "self_direction", "self_direction_action": "self_direction",
    "stimulation": "stimulation", "hedonism": "hedonism", "achievement": "achievement",
    "power_dominance": "power", "power_resources": "power", "security_personal": "security",
    "security_societal": "security", "tradition": "tradition", "conformity_rules": "conformity",
    "conformity_interpersonal": "conformity", "benevolence_caring": "benevolence",
    "benevolence_dependability": "benevolence", "universalism_concern": "universalism",
    "universalism_nature": "universalism", "universalism_tolerance": "universalism",
} | FACE_HUMILITY


@dataclass(frozen=True)
class PVQItem(PortraitItem):
    """A questionnaire item: a :class:`~mechvalue.data.bundled.PortraitItem` plus its number and grammatical person.

    ``person`` is ``"first"`` ("It is important to me...") or ``"third"`` ("It is important to him..."),
    so a questionnaire prompt can ask "How much is this like you?" or "How much is this person like you?".
    ``refined`` is the PVQ-RR refined value (None for PVQ-40 items).
    """

    item: int
    person: str
    refined: str | None = None


def _key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


_REFINED_LOOKUP = {_key(r): r for r in REFINED_VALUES} | {_key(c): r for r, c in REFINED_CODES.items()}


def canonical_refined(name: str) -> str:
    """Canonical refined-value name ("Self-direction: thought", "SDT" -> "self_direction_thought")."""
    if isinstance(name, str) and _key(name) in _REFINED_LOOKUP:
        return _REFINED_LOOKUP[_key(name)]
    raise MechvalueError(f"unknown refined value {name!r}; valid: {', '.join(REFINED_VALUES)} "
                         f"(or codes {', '.join(REFINED_CODES.values())})")


def pvq_key(items: Sequence[PVQItem]) -> dict[str, list[int]]:
    """Scoring key of loaded items: basic value -> sorted item numbers (score = mean of those ratings)."""
    out: dict[str, list[int]] = {}
    for it in sorted(items, key=lambda i: i.item):
        out.setdefault(it.value, []).append(it.item)
    return out


_FIRST = re.compile(r"\b(I|me|my|myself)\b")
_THIRD = re.compile(r"\b(he|she|him|her|his|hers|himself|herself|they|them|their)\b", re.IGNORECASE)


def _person(texts: Sequence[str], person: str | None, path: Path) -> str:
    if person is not None:
        if person not in ("first", "third"):
            raise DataError(f"person must be 'first' or 'third', not {person!r}")
        return person
    first = sum(bool(_FIRST.search(t)) for t in texts)
    third = sum(bool(_THIRD.search(t)) for t in texts)
    if first == third:
        raise DataError(f"{path}: cannot tell whether items are first or third person; pass person=")
    return "first" if first > third else "third"


def _item_numbers(rows: list[dict[str, str]], n: int, path: Path) -> list[int]:
    try:
        nums = [int(r["item"]) for r in rows]
    except ValueError as exc:
        raise DataError(f"{path}: 'item' must be an integer ({exc})") from exc
    if sorted(nums) != list(range(1, n + 1)):
        raise DataError(f"{path}: expected items 1..{n} exactly once each, got {len(nums)} rows "
                        f"(items {sorted(set(nums))[:5]}...)")
    return nums


def load_pvq40(path: str | Path, person: str | None = None) -> list[PVQItem]:
    """The 40 PVQ-40 items from a CSV, checked against :data:`PVQ40_KEY`.

    Columns: ``item`` (1-40), ``value`` (any spelling :func:`~mechvalue.core.values.canonical` accepts) and the
    wording in ``text_first_person``, ``text_third_person`` or ``text`` (first found). ``person`` is
    taken from the column name, else guessed from the pronouns; pass it to override. Ids are
    ``"pvq40-01"``...; items are returned in questionnaire order.

    Obtain the data: the first-person wording ships with ValueBench (github.com/Value4AI/ValueBench,
    ``data/value_orientation.csv``, rows with questionnaire == "PVQ40", MIT); the project's test copy is
    ``../shared/data/pvq40/pvq40_items.csv``. The original third-person instrument (Schwartz et al. 2001,
    J. Cross-Cultural Psychology 32:519-542) is free for non-commercial research from S. H. Schwartz.
    """
    path, rows = read_csv_rows(path, ["item", "value"], "the 40 PVQ-40 items")
    text_col = next((c for c in ("text_first_person", "text_third_person", "text") if c in rows[0]), None)
    if text_col is None:
        raise DataError(f"{path}: expected a wording column text_first_person, text_third_person or text; "
                        f"found {list(rows[0])}")
    nums = _item_numbers(rows, 40, path)
    texts = [r[text_col].strip() for r in rows]
    if any(not t for t in texts):
        raise DataError(f"{path}: empty {text_col!r} in item(s) {[n for n, t in zip(nums, texts) if not t]}")
    if person is None and text_col != "text":
        person = text_col.split("_")[1]
    person = _person(texts, person, path)
    expected = {i: v for v, items in PVQ40_KEY.items() for i in items}
    out, wrong = [], []
    for n, r, t in zip(nums, rows, texts):
        try:
            value = canonical(r["value"])
        except MechvalueError as exc:
            raise DataError(f"{path}: item {n}: {exc}") from exc
        if value != expected[n]:
            wrong.append(f"item {n}: {value} (key: {expected[n]})")
        out.append(PVQItem(id=f"pvq40-{n:02d}", value=value, text=t, item=n, person=person))
    if wrong:
        raise DataError(f"{path}: value column disagrees with the standard PVQ-40 key: {'; '.join(wrong)}")
    return sorted(out, key=lambda i: i.item)


def load_pvq_rr(path: str | Path, face_humility: str | Mapping[str, str] = "svs",
                person: str | None = None) -> list[PVQItem]:
    """The 57 PVQ-RR items (19 refined values x 3) from a CSV with columns ``item``, ``value``, ``text``.

    ``value`` is the refined value in any common spelling ("Self-direction: thought", "SDT",
    "self_direction_thought"); it is kept in ``refined`` and mapped to a basic ``value`` by
    :data:`REFINED_TO_BASIC`. ``face_humility`` sets the two refined values without a basic parent:
    ``"svs"`` (default, :data:`FACE_HUMILITY`: face -> power, humility -> tradition), ``"exclude"``
    (drop their 6 items; the other 17 refined values are unaffected), or a mapping such as
    ``{"face": "security", "humility": "conformity"}``. Ids are ``"pvqrr-01"``...

    Obtain the data: the PVQ-RR (Schwartz et al. 2012, JPSP 103:663-688; Schwartz & Cieciuch 2022) is
    free for non-commercial research from S. H. Schwartz (request it with its scoring key, which gives
    each item's refined value); mechvalue does not ship it. Write it as ``item,value,text``.
    """
    if isinstance(face_humility, str):
        if face_humility not in ("svs", "exclude"):
            raise DataError(f"face_humility must be 'svs', 'exclude' or a mapping, not {face_humility!r}")
        extra = dict(FACE_HUMILITY) if face_humility == "svs" else {}
    else:
        try:
            extra = {canonical_refined(k): canonical(v) for k, v in face_humility.items()}
        except MechvalueError as exc:
            raise DataError(f"face_humility mapping: {exc}") from exc
        if set(extra) != set(FACE_HUMILITY):
            raise DataError(f"face_humility mapping needs the keys face, humility; got {sorted(extra)}")
    mapping = {r: b for r, b in REFINED_TO_BASIC.items() if r not in FACE_HUMILITY} | extra
    path, rows = read_csv_rows(path, ["item", "value", "text"], "the 57 PVQ-RR items")
    nums = _item_numbers(rows, 57, path)
    texts = [r["text"].strip() for r in rows]
    if any(not t for t in texts):
        raise DataError(f"{path}: empty 'text' in item(s) {[n for n, t in zip(nums, texts) if not t]}")
    person = _person(texts, person, path)
    refined: dict[int, str] = {}
    for n, r in zip(nums, rows):
        try:
            refined[n] = canonical_refined(r["value"])
        except MechvalueError as exc:
            raise DataError(f"{path}: item {n}: {exc}") from exc
    counts = {v: sum(1 for x in refined.values() if x == v) for v in REFINED_VALUES}
    bad = {v: c for v, c in counts.items() if c != 3}
    if bad:
        raise DataError(f"{path}: the PVQ-RR has 3 items per refined value; counts differ for {bad}")
    out = [PVQItem(id=f"pvqrr-{n:02d}", value=mapping[refined[n]], text=t, item=n, person=person,
                   refined=refined[n]) for n, t in zip(nums, texts) if refined[n] in mapping]
    return sorted(out, key=lambda i: i.item)


# ---------------------------------------------------------------- Touché23-ValueEval

#: the 20 value categories of Touché23-ValueEval, in the label files' column order
TOUCHE_LABELS: tuple[str, ...] = (
    "Self-direction: thought", "Self-direction: action", "Stimulation", "Hedonism", "Achievement",
    "Power: dominance", "Power: resources", "Face", "Security: personal", "Security: societal", "Tradition",
    "Conformity: rules", "Conformity: interpersonal", "Humility", "Benevolence: caring",
    "Benevolence: dependability", "Universalism: concern", "Universalism: nature", "Universalism: tolerance",
    "Universalism: objectivity",
)
#: ConVA's rule: basic value -> every label whose lower-cased name contains the value's name
#: ("self-direction" ... "universalism"). Face and Humility contain no value name, so they are unused.
TOUCHE_TO_VALUE: dict[str, list[str]] = {
    v: [lab for lab in TOUCHE_LABELS if DISPLAY[v].lower() in lab.lower()] for v in VALUES
}
TOUCHE_SPLITS = ("training", "validation", "test")
_ARG_COLS = {"Argument ID": "argument_id", "Conclusion": "conclusion", "Stance": "stance",
             "Premise": "premise"}


def _read_tsv(path: Path, required: Sequence[str], what: str) -> Any:
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: no such file (expected {what})")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: not a readable TSV ({exc}); expected {what}") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: expected columns {list(required)} for {what}; "
                        f"missing {missing} (found {list(df.columns)})")
    if df.empty:
        raise DataError(f"{path}: no rows (expected {what})")
    return df


def load_touche(directory: str | Path, split: str = "training", include_face_humility: bool = False) -> Any:
    """Touché23-ValueEval arguments of one split as a pandas DataFrame.

    Reads ``arguments-<split>.tsv`` (Argument ID, Conclusion, Stance, Premise) and ``labels-<split>.tsv``
    (Argument ID + the 20 :data:`TOUCHE_LABELS`) from ``directory`` and checks that their ids match one
    to one. Columns: ``argument_id``, ``conclusion``, ``stance``, ``premise``, the 20 labels (original
    names, 0/1 ints) and the 10 basic values (canonical lower-case names, 0/1): a value is 1 when any
    label in :data:`TOUCHE_TO_VALUE` is 1. By default Face and Humility count for no value (ConVA's
    rule); ``include_face_humility=True`` adds them by :data:`FACE_HUMILITY` (face -> power,
    humility -> tradition). Sizes: training 5,393, validation 1,896 (test 1,576 if present).

    Obtain the data: Zenodo doi:10.5281/zenodo.6814563 (the "main" files arguments-*.tsv, labels-*.tsv;
    CC BY 4.0) or the Hugging Face mirror webis/Touche23-ValueEval; the project's test copy (training and
    validation) is ``../shared/data/touche23_valueeval/``. Cite Mirzakhmedova et al. (2024) and
    Kiesel et al. (2022).
    """
    if split not in TOUCHE_SPLITS:
        raise DataError(f"split must be one of {TOUCHE_SPLITS}, not {split!r}")
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such folder (expected the Touché23-ValueEval files)")
    args = _read_tsv(directory / f"arguments-{split}.tsv", list(_ARG_COLS), "Touché23-ValueEval arguments")
    labels = _read_tsv(directory / f"labels-{split}.tsv", ["Argument ID", *TOUCHE_LABELS],
                       "Touché23-ValueEval labels")
    for df, name in ((args, "arguments"), (labels, "labels")):
        dup = df["Argument ID"][df["Argument ID"].duplicated()].tolist()
        if dup:
            raise DataError(f"{directory / f'{name}-{split}.tsv'}: duplicate argument ids {dup[:5]}")
    a_ids, l_ids = set(args["Argument ID"]), set(labels["Argument ID"])
    if a_ids != l_ids:
        raise DataError(f"{directory}: {split} argument and label ids differ: only in arguments "
                        f"{sorted(a_ids - l_ids)[:5]}, only in labels {sorted(l_ids - a_ids)[:5]}")
    lab = labels.set_index("Argument ID").loc[args["Argument ID"], list(TOUCHE_LABELS)]
    bad = ~lab.isin(["0", "1"])
    if bad.to_numpy().any():
        row, col = next(zip(*bad.to_numpy().nonzero()))
        raise DataError(f"{directory / f'labels-{split}.tsv'}: labels must be 0 or 1; "
                        f"{lab.index[row]!r} has {lab.iat[row, col]!r} in {TOUCHE_LABELS[col]!r}")
    out = args[list(_ARG_COLS)].rename(columns=_ARG_COLS).reset_index(drop=True)
    lab = lab.astype(int).reset_index(drop=True)
    out[list(TOUCHE_LABELS)] = lab
    mapping = {v: list(labs) for v, labs in TOUCHE_TO_VALUE.items()}
    if include_face_humility:
        for refined, basic in FACE_HUMILITY.items():
            mapping[basic].append(refined.capitalize())
    for v in VALUES:
        out[v] = lab[mapping[v]].max(axis=1).astype(int)
    return out
