"""Schwartz's theory of basic human values as data.

Ten basic values with canonical names matching ``pyvalues.OriginalValues`` (snake case:
``self_direction`` ... ``universalism``), one-line definitions, the four higher-order
dimensions (hedonism belongs to openness to change *and* self-enhancement, with explicit
membership weights), circumplex order and angles, adjacent and opposite pairs, and the
group sets used for leakage metrics. :func:`canonical` accepts common spellings and
abbreviations and raises a :class:`~mechvalue.core.errors.MechvalueError` listing the valid
names otherwise.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable
from pathlib import Path

from mechvalue.core.errors import MechvalueError, UsageError

# Circumplex order, counter-clockwise, starting at universalism (0 degrees).
VALUES: tuple[str, ...] = (
    "universalism", "benevolence", "tradition", "conformity", "security",
    "power", "achievement", "hedonism", "stimulation", "self_direction",
)
# pyvalues.OriginalValues field order (used when a library expects it).
PYVALUES_ORDER: tuple[str, ...] = (
    "self_direction", "stimulation", "hedonism", "achievement", "power",
    "security", "tradition", "conformity", "benevolence", "universalism",
)
CODES = {"universalism": "UN", "benevolence": "BE", "tradition": "TR", "conformity": "CO", "security": "SE",
         "power": "PO", "achievement": "AC", "hedonism": "HE", "stimulation": "ST", "self_direction": "SD"}
DISPLAY = {v: v.replace("_", "-").capitalize() for v in VALUES}

DEFINITIONS = {
    "self_direction": "independent thought and action: choosing, creating, exploring",
    "stimulation": "excitement, novelty and challenge in life",
    "hedonism": "pleasure and sensuous gratification for oneself",
    "achievement": "personal success through demonstrating competence according to social standards",
    "power": "social status and prestige, control or dominance over people and resources",
    "security": "safety, harmony and stability of society, of relationships, and of self",
    "conformity": "restraint of actions, inclinations and impulses likely to upset or harm others "
                  "and violate social expectations or norms",
    "tradition": "respect, commitment and acceptance of the customs and ideas that one's culture or "
                 "religion provides",
    "benevolence": "preserving and enhancing the welfare of those with whom one is in frequent personal contact",
    "universalism": "understanding, appreciation, tolerance and protection for the welfare of all people "
                    "and for nature",
}

DIMENSIONS: tuple[str, ...] = ("openness_to_change", "conservation", "self_transcendence", "self_enhancement")
DIMENSION_CODES = {"openness_to_change": "OPEN", "conservation": "CONS",
                   "self_transcendence": "TRAN", "self_enhancement": "ENH"}
#: membership weights of each value in each higher-order dimension (hedonism split 0.5/0.5)
DIMENSION_WEIGHTS: dict[str, dict[str, float]] = {
    "openness_to_change": {"self_direction": 1.0, "stimulation": 1.0, "hedonism": 0.5},
    "self_enhancement": {"achievement": 1.0, "power": 1.0, "hedonism": 0.5},
    "conservation": {"security": 1.0, "conformity": 1.0, "tradition": 1.0},
    "self_transcendence": {"benevolence": 1.0, "universalism": 1.0},
}
#: the two bipolar axes, each as (dimension A, dimension B)
OPPOSING_DIMENSIONS: tuple[tuple[str, str], ...] = (
    ("openness_to_change", "conservation"), ("self_transcendence", "self_enhancement"),
)

ADJACENT_PAIRS: tuple[tuple[str, str], ...] = (
    ("universalism", "benevolence"), ("benevolence", "tradition"), ("benevolence", "conformity"),
    ("tradition", "conformity"), ("conformity", "security"), ("tradition", "security"),
    ("security", "power"), ("power", "achievement"), ("achievement", "hedonism"),
    ("hedonism", "stimulation"), ("stimulation", "self_direction"), ("self_direction", "universalism"),
)
OPPOSITE_PAIRS: tuple[tuple[str, str], ...] = (
    ("universalism", "power"), ("benevolence", "achievement"), ("tradition", "hedonism"),
    ("conformity", "stimulation"), ("security", "self_direction"),
)

#: group sets for leakage (NGLR). Each maps group -> {value: membership weight}.
GROUP_SETS: dict[str, dict[str, dict[str, float]]] = {
    "HO4": {DIMENSION_CODES[d]: w for d, w in DIMENSION_WEIGHTS.items()},
    "HO4_exclusive": {
        "OPEN": {"self_direction": 1.0, "stimulation": 1.0, "hedonism": 1.0},
        "ENH": {"achievement": 1.0, "power": 1.0},
        "CONS": {"security": 1.0, "conformity": 1.0, "tradition": 1.0},
        "TRAN": {"benevolence": 1.0, "universalism": 1.0},
    },
    "FOCUS2": {
        "personal": {v: 1.0 for v in ("self_direction", "stimulation", "hedonism", "achievement", "power")},
        "social": {v: 1.0 for v in ("security", "conformity", "tradition", "benevolence", "universalism")},
    },
    "GROWTH2": {
        "growth": {v: 1.0 for v in ("self_direction", "stimulation", "hedonism", "benevolence", "universalism")},
        "self_protection": {v: 1.0 for v in ("achievement", "power", "security", "conformity", "tradition")},
    },
    "AXES2": {
        "openness_conservation": {v: 1.0 for v in ("self_direction", "stimulation", "hedonism", "security",
                                                   "conformity", "tradition")},
        "enhancement_transcendence": {v: 1.0 for v in ("achievement", "power", "hedonism", "benevolence",
                                                       "universalism")},
    },
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


_LOOKUP: dict[str, str] = {}
for _v in VALUES:
    _LOOKUP[_key(_v)] = _v
    _LOOKUP[_key(CODES[_v])] = _v
_LOOKUP.update({"selfdirected": "self_direction", "autonomy": "self_direction", "hedonic": "hedonism",
                "benevolent": "benevolence", "universal": "universalism", "traditional": "tradition"})
_DIM_LOOKUP: dict[str, str] = {}
for _d in DIMENSIONS:
    _DIM_LOOKUP[_key(_d)] = _d
    _DIM_LOOKUP[_key(DIMENSION_CODES[_d])] = _d
_DIM_LOOKUP.update({"openness": "openness_to_change", "selfenhancement": "self_enhancement",
                    "selftranscendence": "self_transcendence", "enhancement": "self_enhancement",
                    "transcendence": "self_transcendence"})


def canonical(name: str) -> str:
    """Canonical value name for ``name`` ("Self direction", "SD", "self-direction" -> "self_direction")."""
    if isinstance(name, str) and _key(name) in _LOOKUP:
        return _LOOKUP[_key(name)]
    raise UsageError(f"unknown value {name!r}; valid values: {', '.join(VALUES)} "
                         f"(or codes {', '.join(CODES.values())})")


def canonical_list(names: Iterable[str] | str | None) -> list[str]:
    """Canonical names for a list (or comma-separated string); None means all ten, in circumplex order."""
    if names is None:
        return list(VALUES)
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    out = [canonical(n.strip()) for n in names]
    if not out:
        raise UsageError("empty list of values")
    return list(dict.fromkeys(out))


def canonical_dimension(name: str) -> str:
    if isinstance(name, str) and _key(name) in _DIM_LOOKUP:
        return _DIM_LOOKUP[_key(name)]
    raise UsageError(f"unknown higher-order dimension {name!r}; valid: {', '.join(DIMENSIONS)} "
                         f"(or {', '.join(DIMENSION_CODES.values())})")


def dimension_of(value: str) -> dict[str, float]:
    """Higher-order dimensions of a value with membership weights (hedonism has two)."""
    value = canonical(value)
    return {d: w[value] for d, w in DIMENSION_WEIGHTS.items() if value in w}


def opposite_dimension(dimension: str) -> str:
    dimension = canonical_dimension(dimension)
    for a, b in OPPOSING_DIMENSIONS:
        if dimension == a:
            return b
        if dimension == b:
            return a
    raise AssertionError(dimension)


def opposites(value: str) -> list[str]:
    value = canonical(value)
    return [b if a == value else a for a, b in OPPOSITE_PAIRS if value in (a, b)]


def adjacent(value: str) -> list[str]:
    value = canonical(value)
    return [b if a == value else a for a, b in ADJACENT_PAIRS if value in (a, b)]


def equal_angles() -> dict[str, float]:
    """Idealised circumplex: 36 degrees apart, universalism at 0, counter-clockwise."""
    return {v: 36.0 * k for k, v in enumerate(VALUES)}


def load_angles(path: str | Path, column: str | None = None) -> dict[str, float]:
    """Angle table (degrees) from a CSV with a value column and an angle column.

    Reads, for example, ``../shared/data/schwartz_circumplex/schwartz10_angles.csv``;
    ``column`` picks the angle column when there are several (default: the first numeric one).
    """
    path = Path(path)
    if not path.exists():
        raise MechvalueError(f"angle table {path} does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise MechvalueError(f"angle table {path} is empty")
    value_col = next((c for c in rows[0] if c.lower() in ("value", "name", "code")), None)
    if value_col is None:
        raise MechvalueError(f"{path}: no 'value' column (columns: {list(rows[0])})")
    if column is None:
        for c in rows[0]:
            if c == value_col:
                continue
            try:
                float(rows[0][c])
                column = c
                break
            except (TypeError, ValueError):
                continue
    if column is None or column not in rows[0]:
        raise MechvalueError(f"{path}: angle column {column!r} not found (columns: {list(rows[0])})")
    angles = {canonical(r[value_col]): float(r[column]) for r in rows}
    missing = set(VALUES) - set(angles)
    if missing:
        raise MechvalueError(f"{path}: angles missing for {sorted(missing)}")
    return angles


def circular_distance(a: str, b: str, angles: dict[str, float] | None = None) -> float:
    """Angular distance between two values on the circumplex, scaled to [0, 1] (1 = opposite)."""
    angles = angles or equal_angles()
    d = abs(angles[canonical(a)] - angles[canonical(b)]) % 360.0
    return min(d, 360.0 - d) / 180.0


def circle_coordinates(angles: dict[str, float] | None = None) -> list[tuple[float, float]]:
    """Unit-circle (x, y) of each value, in :data:`VALUES` order."""
    angles = angles or equal_angles()
    return [(math.cos(math.radians(angles[v])), math.sin(math.radians(angles[v]))) for v in VALUES]
