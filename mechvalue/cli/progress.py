"""What long work tells the user on stderr: a status line with the elapsed time (model load, generation)
and tqdm bars with an ETA (vector training, NeVA probe fitting, evaluation).

stdout stays for results (tables, texts, ``--json``). tqdm is imported only when a bar starts.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator


def say(message: str) -> None:
    """One line on stderr (what is happening, where files go)."""
    print(message, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """``4 s``, ``1 min 05 s``, ``2 h 03 min``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def about(seconds: float | None) -> str:
    """A rough duration for an estimate: ``about 40 s here``, ``about 3 min here``."""
    if seconds is None:
        return "time unknown"
    return _about(seconds) + " here"


def _about(seconds: float) -> str:
    if seconds < 60:
        return f"about {max(5, round(seconds / 5) * 5)} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def _tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def status(what: str, done: str | None = None) -> Iterator[None]:
    """``what ...`` on stderr before the work, ``done in 12 s`` after it (a status line rather than a spinner:
    the work may draw its own bars, e.g. the first model load's GGUF conversion).

    Anything the work prints on stdout (TransformerLens' "Moving model to device") goes to stderr, so stdout
    keeps only results.
    """
    t0 = time.monotonic()
    say(f"{what} ...")
    with contextlib.redirect_stdout(sys.stderr):
        yield
    say(f"{done} in {duration(time.monotonic() - t0)}" if done else f"{what}: done in "
        f"{duration(time.monotonic() - t0)}")


def bar(total: int, desc: str, unit: str = "it"):
    """A tqdm progress bar on stderr with the rate and ETA (fewer redraws when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True,
                mininterval=0.1 if _tty() else 5.0, smoothing=0.1)


def _rows(args: tuple, kwargs: dict) -> int:
    x = args[0] if args else kwargs.get("input", kwargs.get("tokens"))
    shape = getattr(x, "shape", None)
    if shape is not None and len(shape) >= 1:
        return int(shape[0])
    return len(x) if isinstance(x, list) else 1


@contextlib.contextmanager
def forward_progress(model, total: int, desc: str, *, unit: str = "text", then: str | None = None) -> Iterator:
    """A bar over the rows the model's forward passes read, for work that calls the model on ``total``
    texts in batches without reporting progress itself (e.g. training probe vectors). When all rows are
    read, the bar says ``then`` (e.g. "fitting probes") until the work returns.

    The count comes from a plain PyTorch forward hook on the model (TransformerLens' own hooks are left alone).
    """
    pbar = bar(total, desc, unit)

    def hook(module, args, kwargs, output):
        pbar.update(min(_rows(args, kwargs), max(0, total - pbar.n)))
        if then and pbar.n >= total:
            pbar.set_postfix_str(then, refresh=True)

    register = getattr(model, "register_forward_hook", None)
    handle = register(hook, with_kwargs=True) if register is not None else None
    try:
        yield pbar
    finally:
        if handle is not None:
            handle.remove()
        pbar.close()
