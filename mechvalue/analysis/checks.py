"""Argument checks at the public boundary of the analysis functions.

Each check raises :class:`~mechvalue.core.errors.UsageError` with a message that starts with the
function's name and says which argument is wrong, what it received (shape or value) and what was
expected, before any math runs (so bad input never ends in a traceback from deep inside torch,
numpy or scipy, nor in silent NaN garbage).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mechvalue.core.errors import UsageError


def fail(where: str, message: str) -> UsageError:
    """The error to raise: ``raise fail("svd_axes", "v_int is the zero vector")``."""
    return UsageError(f"{where}: {message}")


def _first_bad(bad: np.ndarray, what: str) -> str:
    count = int(bad.sum())
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    at = first[0] if len(first) == 1 else first
    return f"{count} {what} value{'s' if count > 1 else ''} (first at index {at})"


def finite(x: Tensor | np.ndarray, name: str, where: str, *, allow_nan: bool = False) -> None:
    """Refuse NaN or infinite entries (only infinite ones with ``allow_nan``: NaN marks a missing score),
    naming how many and where the first one is."""
    if isinstance(x, Tensor):
        bad = (torch.isinf(x) if allow_nan else ~torch.isfinite(x)).cpu().numpy()
    else:
        bad = np.isinf(x) if allow_nan else ~np.isfinite(x)
    if bad.size and bad.any():
        what, expected = ("inf", "finite numbers or NaN (missing)") if allow_nan else ("NaN/inf", "finite numbers")
        raise fail(where, f"{name} has {_first_bad(bad, what)}; expected {expected}")


def _tensor(x, name: str, where: str) -> Tensor:
    try:
        return torch.as_tensor(x).float()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise fail(where, f"{name} must be numbers (a tensor, array or list), got {type(x).__name__}") from exc


def matrix(x, name: str, where: str, *, min_rows: int = 1, allow_nan: bool = False) -> Tensor:
    """``x`` as a float ``[n, d]`` tensor with ``n >= min_rows`` and ``d >= 1`` (finite unless ``allow_nan``)."""
    t = _tensor(x, name, where)
    if t.ndim != 2 or t.shape[0] < min_rows or t.shape[1] == 0:
        rows = "a non-empty [n, d] matrix" if min_rows <= 1 else f"an [n, d] matrix with n >= {min_rows} rows"
        raise fail(where, f"{name} must be {rows} (d >= 1), got shape {tuple(t.shape)}")
    if not allow_nan:
        finite(t, name, where)
    return t


def vector(x, name: str, where: str, *, nonzero: bool = False) -> Tensor:
    """``x`` as a finite float ``[d]`` tensor (``d >= 1``); with ``nonzero`` the zero vector is refused."""
    t = _tensor(x, name, where)
    if t.ndim != 1 or t.shape[0] == 0:
        raise fail(where, f"{name} must be a non-empty [d] vector, got shape {tuple(t.shape)}")
    finite(t, name, where)
    if nonzero and not bool((t != 0).any()):
        raise fail(where, f"{name} is the zero vector (shape {tuple(t.shape)}); it has no direction")
    return t


def same_width(a: Tensor | np.ndarray, b: Tensor | np.ndarray, names: tuple[str, str], where: str) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise fail(where, f"{names[0]} has width {a.shape[-1]} (shape {tuple(a.shape)}) but {names[1]} has width "
                          f"{b.shape[-1]} (shape {tuple(b.shape)}); expected the same width")


def count(n, name: str, where: str, minimum: int = 1) -> int:
    """An integer ``>= minimum`` (bools and floats refused)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < minimum:
        raise fail(where, f"{name} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def positive(x, name: str, where: str) -> float:
    """A finite number ``> 0``."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x) or x <= 0:
        raise fail(where, f"{name} must be a finite number > 0, got {x!r}")
    return float(x)


def texts(x, name: str, where: str) -> list[str]:
    """A list of strings (a single string is refused: it would be read as a list of characters)."""
    if isinstance(x, str) or not isinstance(x, Sequence | np.ndarray):
        raise fail(where, f"{name} must be a list of strings, got a {type(x).__name__}; wrap one text as [text]")
    bad = [k for k, t in enumerate(x) if not isinstance(t, str)]
    if bad:
        raise fail(where, f"{name}[{bad[0]}] is a {type(x[bad[0]]).__name__}, expected str")
    return list(x)


def numbers_1d(x, name: str, where: str, *, allow_nan: bool = False) -> np.ndarray:
    """A finite (or NaN, with ``allow_nan``), non-empty 1-D float array (a list, array or tensor of numbers)."""
    try:
        a = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise fail(where, f"{name} must be a 1-D run of numbers, got {type(x).__name__}") from exc
    if a.ndim != 1 or a.shape[0] == 0:
        raise fail(where, f"{name} must be a non-empty 1-D run of numbers, got shape {a.shape}")
    finite(a, name, where, allow_nan=allow_nan)
    return a


def array2d(x, name: str, where: str, *, min_rows: int = 1, cols: int | None = None,
            allow_nan: bool = False) -> np.ndarray:
    """``x`` as a finite (or NaN, with ``allow_nan``) float ``[n, k]`` numpy array with ``n >= min_rows`` and
    ``k >= 1`` (``k == cols`` if given)."""
    try:
        a = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise fail(where, f"{name} must be an [n, k] array of numbers, got {type(x).__name__}") from exc
    k = "k" if cols is None else str(cols)
    if a.ndim != 2 or a.shape[0] < min_rows or a.shape[1] == 0 or (cols is not None and a.shape[1] != cols):
        raise fail(where, f"{name} must be an [n, {k}] array with n >= {min_rows}, got shape {a.shape}")
    finite(a, name, where, allow_nan=allow_nan)
    return a


def spread(a: np.ndarray, name: str, where: str) -> None:
    """Refuse point sets whose rows are all the same (nothing to fit or align)."""
    if not np.abs(a - a[0]).max() > 0:
        raise fail(where, f"{name} ({a.shape[0]} rows) has all rows equal; expected at least two distinct points")
