"""Console output of the command line: numbers with 3 significant digits, aligned tables, compact
key=value blocks, and the JSON that ``--json`` prints instead (full precision, NaN as null).

Pure Python (csv, json, textwrap): no pandas or torch, so ``mechvalue show`` answers at once.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mechvalue.core.errors import CorruptFileError

MISSING = "–"  # a missing or NaN cell


def sig(x: float, digits: int = 3, strip: bool | str = False) -> str:
    """``x`` with ``digits`` significant digits, in fixed point for 1e-3 <= |x| < 1e6, else ``1.23e-05``.

    ``strip=True`` drops trailing zeros (``0.001`` rather than ``0.00100``), for prose and config values;
    ``strip="exact"`` only where the short form is exactly ``x`` (``0.5``, ``0.01``, but ``2.00`` for 1.9985).
    """
    x = float(x)
    if math.isnan(x):
        return MISSING
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    rounded = float(f"{x:.{digits - 1}e}")  # rounding first: 0.9996 -> 1.00, not 1.000
    if strip == "exact":
        strip = abs(rounded - x) <= 1e-12 * abs(x)
    e = math.floor(math.log10(abs(rounded)))
    if -3 <= e < 6:
        decimals = max(0, digits - 1 - e)
        s = f"{round(rounded, decimals):.{decimals}f}"
        if strip and "." in s:
            s = s.rstrip("0").rstrip(".")
        return s
    s = f"{rounded:.{digits - 1}e}"
    if strip:
        mant, exp = s.split("e")
        s = (mant.rstrip("0").rstrip(".") if "." in mant else mant) + "e" + exp
    return s


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def cell(v: Any, integral: bool = False) -> str:
    """One table cell: numbers with 3 significant digits, fewer where that is exact (``0.5``); ``integral``:
    whole numbers as integers."""
    if is_missing(v):
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if integral and v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return sig(v, strip="exact")
    if isinstance(v, tuple) and len(v) == 3 and all(is_number(x) or is_missing(x) for x in v):  # estimate, CI
        est, lo, hi = v
        return cell(est) if is_missing(lo) and is_missing(hi) else f"{cell(est)} [{cell(lo)}, {cell(hi)}]"
    if isinstance(v, list | tuple):
        return compact(v)
    return str(v)


def terminal_width() -> int:
    return shutil.get_terminal_size((100, 24)).columns


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, indent: str = "  ",
          width: int | None = None) -> str:
    """An aligned text table: numeric columns right-aligned with 3 significant digits, text left-aligned.

    Wider than ``width`` (default: the terminal's), it is split into blocks of columns, each repeating the
    leading text columns (the row labels), as pandas does.
    """
    columns = [str(c) for c in columns]
    rows = [list(r) + [None] * (len(columns) - len(r)) for r in rows]
    numeric, texts = [], []
    for j in range(len(columns)):
        vals = [r[j] for r in rows if not is_missing(r[j])]
        num = all(is_number(v) or isinstance(v, tuple) for v in vals) and bool(vals)
        integral = num and all(isinstance(v, int) or (isinstance(v, float) and v.is_integer()) for v in vals)
        numeric.append(num)
        texts.append([cell(r[j], integral) for r in rows])
    widths = [max([len(columns[j])] + [len(t) for t in texts[j]]) for j in range(len(columns))]
    labels = []
    for j in range(len(columns)):  # the leading text columns label each row
        if numeric[j]:
            break
        labels.append(j)
    width = width or terminal_width()
    blocks, current = [], []
    used = len(indent) + sum(widths[j] + 2 for j in labels)
    for j in range(len(columns)):
        if j in labels:
            continue
        if current and used + widths[j] + 2 > width:
            blocks.append(current)
            current, used = [], len(indent) + sum(widths[j] + 2 for j in labels)
        current.append(j)
        used += widths[j] + 2
    blocks.append(current)

    def line(cells: Iterable[tuple[int, str]]) -> str:
        return (indent + "  ".join(s.rjust(widths[j]) if numeric[j] else s.ljust(widths[j])
                                   for j, s in cells)).rstrip()

    out = []
    for block in blocks:
        cols = labels + block
        out.append(line((j, columns[j]) for j in cols))
        out.extend(line((j, texts[j][i]) for j in cols) for i in range(len(rows)))
        out.append("")
    return "\n".join(out).rstrip("\n")


def records_table(records: Sequence[Mapping[str, Any]], *, columns: Sequence[str] | None = None,
                  **kw) -> str:
    columns = list(columns) if columns is not None else list(dict.fromkeys(k for r in records for k in r))
    return table(columns, [[r.get(c) for c in columns] for r in records], **kw)


def merge_ci(columns: Sequence[str], rows: Sequence[Sequence[Any]], low: str = "_ci_low",
             high: str = "_ci_high") -> tuple[list[str], list[list[Any]]]:
    """Fold ``X``, ``X_ci_low``, ``X_ci_high`` columns into one ``X [95% CI]`` column of (estimate, low, high)."""
    columns = list(columns)
    idx = {c: j for j, c in enumerate(columns)}
    out_cols, picks = [], []
    for j, c in enumerate(columns):
        if c.endswith(low) or c.endswith(high):
            if c.removesuffix(low).removesuffix(high) in idx:
                continue
        if c + low in idx and c + high in idx:
            out_cols.append(f"{c} [95% CI]")
            picks.append((j, idx[c + low], idx[c + high]))
        else:
            out_cols.append(c)
            picks.append(j)
    out_rows = [[tuple(r[k] for k in p) if isinstance(p, tuple) else r[p] for p in picks] for r in rows]
    return out_cols, out_rows


def _value(text: str) -> Any:
    """A CSV field as int, float or str (empty: None)."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_csv(path: str | Path) -> tuple[list[str], list[list[Any]]]:
    """(columns, typed rows) of a CSV table; :class:`CorruptFileError` naming the file if it is unreadable."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            columns = next(reader, None)
            rows = [[_value(x) for x in r] for r in reader if r]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CorruptFileError(f"{path}: not a readable CSV table ({str(exc).splitlines()[0]})") from exc
    if not columns:
        raise CorruptFileError(f"{path}: not a readable CSV table (empty file)")
    bad = [i for i, r in enumerate(rows, 2) if len(r) > len(columns)]
    if bad:
        raise CorruptFileError(f"{path}: not a readable CSV table (line {bad[0]} has {len(rows[bad[0] - 2])} "
                               f"fields, the header {len(columns)})")
    return columns, [r + [None] * (len(columns) - len(r)) for r in rows]


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path}: not valid JSON ({exc})") from exc


def compact(v: Any, max_items: int = 8) -> str:
    """A value on one short line: numbers with 3 significant digits, lists cut after ``max_items``."""
    if is_missing(v):
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return sig(v, strip="exact")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return v if v and not any(ch in v for ch in " ,=[]{}") else json.dumps(v)
    if isinstance(v, Mapping):
        items = list(v.items())
        shown = ", ".join(f"{k}: {compact(x, max_items)}" for k, x in items[:max_items])
        more = f", ... {len(items) - max_items} more" if len(items) > max_items else ""
        return "{" + shown + more + "}"
    if isinstance(v, list | tuple):
        shown = ", ".join(compact(x, max_items) for x in v[:max_items])
        more = f", ... {len(v) - max_items} more" if len(v) > max_items else ""
        return "[" + shown + more + "]"
    return str(v)


def pack(tokens: Sequence[str], width: int, first: str = "", rest: str = "", sep: str = "  ") -> list[str]:
    """Lines of ``tokens`` joined by ``sep``, broken only between tokens (a token longer than a line gets its own)."""
    lines: list[str] = []
    line = first
    fresh = True
    for tok in tokens:
        if not fresh and len(line) + len(sep) + len(tok) > width:
            lines.append(line.rstrip())
            line, fresh = rest, True
        line += tok if fresh else sep + tok
        fresh = False
    if not fresh or not lines:
        lines.append(line.rstrip())
    return lines


def _parts(v: Any, max_items: int) -> list[str]:
    """A value as tokens to :func:`pack`: a mapping's ``key: value`` items, a list's items, else one token."""
    if isinstance(v, Mapping) and v:
        items = list(v.items())
        out = [f"{k}: {compact(x, max_items)}," for k, x in items[:max_items]]
    elif isinstance(v, list | tuple) and v:
        items = list(v)
        out = [compact(x, max_items) + "," for x in items[:max_items]]
    elif isinstance(v, str):
        return v.split(" ")
    else:
        return [cell(v) if is_number(v) else compact(v, max_items)]
    if len(items) > max_items:
        out.append(f"... {len(items) - max_items} more")
    else:
        out[-1] = out[-1][:-1]
    return out


def key_values(obj: Mapping[str, Any], *, indent: str = "  ", width: int | None = None,
               max_items: int = 8) -> str:
    """``key=value`` pairs wrapped to the width; nested mappings as one ``name: k=v ...`` block each."""
    width = width or terminal_width()
    flat = [f"{k}={compact(v, max_items)}" for k, v in obj.items() if not isinstance(v, Mapping) or not v]
    lines = pack(flat, width, indent, indent) if flat else []
    for k, v in obj.items():
        if isinstance(v, Mapping) and v:
            inner = [f"{kk}={compact(vv, max_items)}" for kk, vv in v.items()]
            lines += pack(inner, width, f"{indent}{k}: ", indent + "    ")
    return "\n".join(lines)


def key_table(obj: Mapping[str, Any], *, indent: str = "  ", width: int | None = None, max_items: int = 32) -> str:
    """One row per key: the key, then its value (numbers with 3 significant digits, nested values' items
    wrapped under it)."""
    width = width or terminal_width()
    if not obj:
        return ""
    kw = max(len(str(k)) for k in obj)
    lines = []
    for k, v in obj.items():
        lines += pack(_parts(v, max_items), width, f"{indent}{str(k).ljust(kw)}  ", indent + " " * (kw + 2), " ")
    return "\n".join(lines)


def jsonable(obj: Any) -> Any:
    """Plain JSON values: NaN and infinities as null, tuples as lists, numpy/torch scalars as numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalar
        try:
            return jsonable(obj.item())
        except (TypeError, ValueError):
            pass
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    return str(obj)


def write(text: str) -> None:
    """``text`` and a newline on stdout; a reader that stops early (``| head``) ends the output quietly."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        try:  # no second error when Python flushes stdout at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass


def print_json(obj: Any) -> None:
    """The one JSON document of ``--json`` on stdout."""
    write(json.dumps(jsonable(obj), indent=2, allow_nan=False))


def frame_records(df) -> list[dict]:
    """A pandas DataFrame's rows as dicts of plain Python values (NaN as None)."""
    return [{str(k): (None if is_missing(v) else v) for k, v in r.items()}
            for r in jsonable(df.to_dict(orient="records"))]


def frame_table(df, **kw) -> str:
    """A pandas DataFrame as :func:`table` (3 significant digits, aligned)."""
    recs = frame_records(df)
    return table([str(c) for c in df.columns], [[r[str(c)] for c in df.columns] for r in recs], **kw)
