"""Reading a run folder for the report and the paper anchors: tables, JSON, and number formatting.

A missing file reads as None; a table with no rows raises :class:`EmptyTable`; the errors in
:data:`RENDER_ERRORS` are the ones a rendering step turns into a visible problem note.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import pandas as pd

from mechvalue.core.errors import MechvalueError

RENDER_ERRORS = (MechvalueError, ValueError, KeyError, TypeError, OSError)
DUAL_TYPES = ("intrinsic", "prompted", "intrinsic_perp", "prompted_perp")


def escape_html(x) -> str:
    return html.escape(str(x))


def format_number(x, fmt: str = ".3f") -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return escape_html(x)
    return "–" if not math.isfinite(x) else format(x, fmt)


class EmptyTable(MechvalueError):
    """A table file that exists but has no rows (e.g. nothing was selected)."""


def read_table(run_dir: Path, rel: str) -> pd.DataFrame | None:
    """The CSV at ``run_dir/rel``, or None when it does not exist; :class:`EmptyTable` when it has no rows."""
    path = run_dir / rel
    if not path.exists():
        return None
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise EmptyTable(f"{rel}: empty file") from exc
    if df.empty:
        raise EmptyTable(f"{rel}: no rows")
    return df


def read_json_file(run_dir: Path, rel: str):
    path = run_dir / rel
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MechvalueError(f"{rel} is not valid JSON ({exc})") from exc


def on_target(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose value is their target (all rows when there are none)."""
    if "value" in df and "target" in df:
        same = df[df["value"].astype(str) == df["target"].astype(str)]
        if len(same):
            return same
    return df
