"""Schwartz value reference data: names, dimensions, circumplex relations, angle tables."""

from __future__ import annotations

import csv
import itertools

import pytest

from mechvalue.core.errors import MechvalueError
from mechvalue.core.values import (
    ADJACENT_PAIRS,
    CODES,
    DIMENSION_WEIGHTS,
    DIMENSIONS,
    GROUP_SETS,
    OPPOSITE_PAIRS,
    PYVALUES_ORDER,
    VALUES,
    adjacent,
    canonical,
    canonical_dimension,
    canonical_list,
    circle_coordinates,
    circular_distance,
    dimension_of,
    equal_angles,
    load_angles,
    opposite_dimension,
    opposites,
)

ANGLES_CSV = "schwartz_circumplex/schwartz10_angles.csv"


@pytest.mark.parametrize("spelling", ["self direction", "SD", "Self-Direction", "self_direction", "sd",
                                      "SELF-DIRECTION", "selfdirection"])
def test_self_direction_spellings(spelling):
    assert canonical(spelling) == "self_direction"


def test_every_value_name_code_and_display_form_is_canonical():
    assert len(VALUES) == 10 and len(set(VALUES)) == 10
    assert set(PYVALUES_ORDER) == set(VALUES)
    for v in VALUES:
        assert canonical(v) == v
        assert canonical(CODES[v]) == v
        assert canonical(CODES[v].lower()) == v
        assert canonical(v.replace("_", " ").title()) == v
    assert len(set(CODES.values())) == 10


def test_pyvalues_order_matches_the_library():
    pyvalues = pytest.importorskip("pyvalues")
    fields = getattr(pyvalues.OriginalValues, "model_fields", None) or pyvalues.OriginalValues.__annotations__
    assert tuple(fields)[:10] == PYVALUES_ORDER


@pytest.mark.parametrize("bad", ["kindness", "", "self", "XX", None, 3])
def test_unknown_value_lists_the_valid_names(bad):
    with pytest.raises(MechvalueError) as info:
        canonical(bad)
    msg = str(info.value)
    assert all(v in msg for v in VALUES)


def test_canonical_list():
    assert canonical_list(None) == list(VALUES)
    assert canonical_list("SD, power,Self-Direction") == ["self_direction", "power"]
    assert canonical_list(["UN", "benevolence"]) == ["universalism", "benevolence"]
    with pytest.raises(MechvalueError, match="empty"):
        canonical_list([])
    with pytest.raises(MechvalueError, match="valid values"):
        canonical_list("power, greed")


def test_dimensions_and_hedonism_dual_membership():
    for d in DIMENSIONS:
        assert canonical_dimension(d) == d
    assert canonical_dimension("OPEN") == "openness_to_change"
    assert canonical_dimension("Self-Enhancement") == "self_enhancement"
    with pytest.raises(MechvalueError, match="openness_to_change"):
        canonical_dimension("growth")
    he = dimension_of("HE")
    assert he == {"openness_to_change": 0.5, "self_enhancement": 0.5}
    for v in VALUES:
        member = dimension_of(v)
        assert sum(member.values()) == pytest.approx(1.0)
        if v != "hedonism":
            assert len(member) == 1 and set(member.values()) == {1.0}
    # every value belongs to some dimension; the dimensions are exactly the four
    assert set(DIMENSION_WEIGHTS) == set(DIMENSIONS)
    assert set().union(*DIMENSION_WEIGHTS.values()) == set(VALUES)


def test_opposing_dimensions_are_an_involution():
    for d in DIMENSIONS:
        o = opposite_dimension(d)
        assert o != d and opposite_dimension(o) == d
        # opposing dimensions share no value (hedonism sits in two dimensions, but not opposing ones)
        shared = set(DIMENSION_WEIGHTS[d]) & set(DIMENSION_WEIGHTS[o])
        assert shared == set()


def test_opposites_and_adjacent_are_symmetric():
    for a in VALUES:
        for b in opposites(a):
            assert a in opposites(b)
        for b in adjacent(a):
            assert a in adjacent(b)
        assert a not in opposites(a) and a not in adjacent(a)
        assert not set(opposites(a)) & set(adjacent(a))
        assert len(opposites(a)) == 1
        assert len(adjacent(a)) >= 2
    assert opposites("Self-Direction") == ["security"]
    # pairs are unique, unordered
    for pairs in (ADJACENT_PAIRS, OPPOSITE_PAIRS):
        keys = [frozenset(p) for p in pairs]
        assert len(keys) == len(set(keys))
    assert {v for p in OPPOSITE_PAIRS for v in p} == set(VALUES)


def test_circular_distance():
    for a, b in itertools.product(VALUES, repeat=2):
        d = circular_distance(a, b)
        assert 0.0 <= d <= 1.0
        assert d == pytest.approx(circular_distance(b, a))
        assert (d == 0.0) == (a == b)
    for a, b in OPPOSITE_PAIRS:
        assert circular_distance(a, b) == pytest.approx(1.0)
    for a, b in ADJACENT_PAIRS:
        assert circular_distance(a, b) <= 0.4 + 1e-9
    # neighbours in circumplex order are 36 degrees apart, including across 0/360
    order = list(VALUES)
    for a, b in zip(order, order[1:] + order[:1]):
        assert circular_distance(a, b) == pytest.approx(36 / 180)
    # custom angles wrap around 360 correctly
    angles = {v: 0.0 for v in VALUES} | {"power": 350.0, "universalism": 10.0}
    assert circular_distance("power", "universalism", angles) == pytest.approx(20 / 180)
    coords = circle_coordinates()
    assert len(coords) == 10
    assert all(x * x + y * y == pytest.approx(1.0) for x, y in coords)


def test_group_sets_cover_all_values():
    for name, groups in GROUP_SETS.items():
        members = [v for g in groups.values() for v in g]
        assert set(members) == set(VALUES), name
        assert all(w > 0 for g in groups.values() for w in g.values())
    # HO4 mirrors the dimensions, with hedonism's weight split so each value totals 1
    for v in VALUES:
        total = sum(g.get(v, 0.0) for g in GROUP_SETS["HO4"].values())
        assert total == pytest.approx(1.0), v
    # the exclusive / two-way sets are partitions
    for name in ("HO4_exclusive", "FOCUS2", "GROWTH2"):
        members = [v for g in GROUP_SETS[name].values() for v in g]
        assert len(members) == len(set(members)) == 10, name
    assert "hedonism" in GROUP_SETS["HO4_exclusive"]["OPEN"]


def _csv_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_load_angles_from_shared_table(shared_data):
    path = shared_data / ANGLES_CSV
    rows = _csv_rows(path)
    angles = load_angles(path)
    assert set(angles) == set(VALUES)
    # default: the first numeric column
    first_numeric = next(c for c in rows[0] if c != "value" and _is_float(rows[0][c]))
    for r in rows:
        assert angles[canonical(r["value"])] == pytest.approx(float(r[first_numeric]))
    # an equal-spacing table in circumplex order gives the same pairwise distances as equal_angles()
    if first_numeric.startswith("theory_equal"):
        for a, b in itertools.combinations(VALUES, 2):
            assert circular_distance(a, b, angles) == pytest.approx(circular_distance(a, b))
    # a chosen column
    numeric = [c for c in rows[0] if c != "value" and _is_float(rows[0][c])]
    chosen = numeric[-1]
    assert chosen != first_numeric
    picked = load_angles(path, column=chosen)
    for r in rows:
        assert picked[canonical(r["value"])] == pytest.approx(float(r[chosen]))
    assert picked != angles


def _is_float(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def test_load_angles_errors(shared_data, tmp_path):
    with pytest.raises(MechvalueError, match="does not exist"):
        load_angles(tmp_path / "nope.csv")
    with pytest.raises(MechvalueError, match="not found") as info:
        load_angles(shared_data / ANGLES_CSV, column="no_such_column")
    assert "columns" in str(info.value)
    empty = tmp_path / "empty.csv"
    empty.write_text("value,deg\n")
    with pytest.raises(MechvalueError, match="empty"):
        load_angles(empty)
    novalue = tmp_path / "novalue.csv"
    novalue.write_text("thing,deg\nSD,0\n")
    with pytest.raises(MechvalueError, match="value"):
        load_angles(novalue)
    partial = tmp_path / "partial.csv"
    partial.write_text("value,deg\nSD,0\nPO,180\n")
    with pytest.raises(MechvalueError, match="missing"):
        load_angles(partial)
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("value,deg\nGreed,0\n")
    with pytest.raises(MechvalueError, match="valid values"):
        load_angles(unknown)


def test_equal_angles():
    angles = equal_angles()
    assert list(angles) == list(VALUES)
    assert sorted(angles.values()) == [36.0 * k for k in range(10)]
