"""Atomic writes, run metadata and safetensors bundles with JSON metadata.

Every artifact mechvalue saves is a pair ``<name>.safetensors`` (tensors) plus the JSON
metadata stored inside the safetensors header (key ``"mechvalue"``), written atomically
(temp file in the same folder, then ``os.replace``), so a crash never leaves a half file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mechvalue.core.errors import CorruptFileError

FORMAT_VERSION = 1
_TRACKED_PACKAGES = ("mechvalue", "torch", "transformer-lens", "transformers", "gguf", "numpy", "pyvalues")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine numerical results, plus Python's."""
    out = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Save ``tensors`` and JSON-serialisable ``meta`` in one safetensors file, atomically."""
    path = Path(path)
    meta = {"format_version": FORMAT_VERSION, "versions": package_versions(), **meta}
    header = {"mechvalue": json.dumps(meta, sort_keys=True, default=str)}
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=header)
    return path


def load_tensors(path: str | os.PathLike, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a file written by :func:`save_tensors`; check its ``kind`` if given."""
    path = Path(path)
    if not path.exists():
        raise CorruptFileError(f"{path}: no such file")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CorruptFileError(f"{path}: not a readable safetensors file ({exc}); delete it and recompute") from exc
    if "mechvalue" not in header:
        raise CorruptFileError(f"{path}: safetensors file without mechvalue metadata; was it written by mechvalue?")
    try:
        meta = json.loads(header["mechvalue"])
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{path}: metadata is not valid JSON ({exc})") from exc
    if kind is not None and meta.get("kind") != kind:
        raise CorruptFileError(f"{path}: holds a {meta.get('kind')!r}, expected a {kind!r}")
    return tensors, meta


# ------------------------------------------------------------------ append-only JSONL journals

def read_jsonl_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of an append-only JSONL file ([] if missing).

    A last line cut short by a kill mid-write (no trailing newline and not valid JSON) is dropped with a
    warning and cut from the file; a complete line is never dropped. A complete line that is not valid
    JSON raises :class:`CorruptFileError` naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    rows = []
    for k, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise CorruptFileError(f"{path}:{k}: not valid JSON ({exc.msg}); delete the file to recompute "
                                   "its rows") from exc
    if tail.strip():
        try:
            rows.append(json.loads(tail))
        except json.JSONDecodeError:
            warnings.warn(f"{path}: dropping an incomplete last line ({len(tail)} bytes; an interrupted write)",
                          stacklevel=2)
            with open(path, "r+b") as fh:
                fh.truncate(len(raw) - len(tail))
    return rows


def append_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """Append ``rows`` as JSON lines, flushed to disk; an incomplete last line is dropped first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    read_jsonl_rows(path)  # drops a torn tail
    if path.exists() and (data := path.read_bytes()) and not data.endswith(b"\n"):
        with open(path, "ab") as fh:  # a complete last row written without its newline
            fh.write(b"\n")
    with open(path, "a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, default=str) + "\n" for r in rows)
        fh.flush()
        os.fsync(fh.fileno())
