"""Shared helpers for the benchmark scripts (not a test module; not part of the package).

Every benchmark prints a small table and writes one JSON file (``--out``), with the
machine description below, so numbers can be compared across runs.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def cpu_count() -> int:
    """CPUs this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def set_threads(n: int | None) -> int:
    import torch

    n = n or cpu_count()
    torch.set_num_threads(n)
    return n


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def machine() -> dict:
    """Where the numbers come from: CPU, cores, versions, load average, date."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        import psutil

        mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": cpu, "cores": cpu_count(),
            "memory_gib": mem_gb, "platform": platform.platform(), "loadavg_start": loadavg()}
    try:
        from mechvalue.core.artifacts import package_versions

        info["versions"] = package_versions()
    except Exception as exc:  # noqa: BLE001 - informational only
        info["versions"] = f"unavailable ({exc})"
    return info


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def default_out(name: str) -> Path:
    return RESULTS / f"{name}.json"


def write_json(path: str | os.PathLike, obj: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {**obj}
    if isinstance(obj.get("machine"), dict):
        obj["machine"]["loadavg_end"] = loadavg()
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    return path


def table(rows: Sequence[Sequence], header: Sequence[str]) -> str:
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(x) -> str:
    if isinstance(x, float):
        if x != x:
            return "nan"
        return f"{x:.3f}" if abs(x) < 1000 else f"{x:.0f}"
    return str(x)


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "FAIL"


def warn_if_loaded(cores: int) -> str | None:
    la = loadavg()
    if la and la[0] > cores + 0.5:
        msg = (f"warning: 1-min load average {la[0]} exceeds {cores} cores: other processes share the "
               "CPU, absolute timings are inflated (ratios are interleaved to limit the effect)")
        print(msg, file=sys.stderr)
        return msg
    return None


def chat_examples(n: int, *, mode: str = "half"):
    """``n`` chat prompts from the bundled queries, with and without value system prompts.

    ``mode="half"``: the first ``n // 2`` are intrinsic (no system prompt) and the rest carry
    a system prompt (round-robin over all value system prompts); queries cycle if ``n`` exceeds
    their count. ``mode="cycle"``: an endless deterministic sequence alternating intrinsic and
    prompted examples (prefixes of it have the same mix, so sizes are comparable).
    """
    from mechvalue.data.bundled import load_queries, load_system_prompts
    from mechvalue.lm.prompts import chat

    queries = [q.text for q in load_queries()]
    systems = [s.text for s in load_system_prompts()]
    nq, ns = len(queries), len(systems)
    out = []
    if mode == "half":
        n_intrinsic = n // 2
        for i in range(n):
            if i < n_intrinsic:
                out.append(chat(queries[i % nq]))
            else:
                j = i - n_intrinsic
                out.append(chat(queries[(n_intrinsic + j) % nq], systems[j % ns]))
    elif mode == "cycle":
        for i in range(n):
            k = i // 2
            if i % 2 == 0:
                out.append(chat(queries[k % nq]))
            else:
                out.append(chat(queries[(k + nq // 2) % nq], systems[k % ns]))
    else:
        raise ValueError(mode)
    return out


def parse_layers(spec: str, n_layers: int) -> list[int] | None:
    """``all`` -> None (every layer), ``0-2`` -> [0, 1, 2], ``0,5,9`` -> [0, 5, 9]."""
    if spec == "all":
        return None
    out: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return [x % n_layers for x in out]
