"""Reading the CSV files of public datasets (:mod:`mechvalue.data.public`, :mod:`mechvalue.data.mmlu`)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from mechvalue.core.errors import DataError


def read_csv_rows(path: str | Path, required: Sequence[str], what: str) -> tuple[Path, list[dict[str, str]]]:
    """Rows of a CSV file as dicts, checked for ``required`` columns, at least one row and no ragged line.

    Raises :class:`~mechvalue.core.errors.DataError` naming the path (and line) and ``what`` was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected {what})")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        cols = list(reader.fieldnames or [])
    missing = [c for c in required if c not in cols]
    if missing:
        raise DataError(f"{path}: expected columns {list(required)} for {what}; "
                        f"missing {missing} (found {cols})")
    if not rows:
        raise DataError(f"{path}: no rows (expected {what})")
    ragged = next((n for n, r in enumerate(rows, 2) if None in r or None in r.values()), None)
    if ragged is not None:
        raise DataError(f"{path}:{ragged}: wrong number of fields (expected {len(cols)}: {cols})")
    return path, rows
