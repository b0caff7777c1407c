"""The run folder of ``mechvalue run``: where artifacts go, step records, the lock, and shared objects built once.

:class:`RunFolder` loads the model and the judge on first use, finds MMLU, and holds the pair features
that the ConVA and NeVA steps share (one pass over the pairs).

Each finished step leaves ``<step>/DONE.json`` with its **fingerprint**: a hash of everything its results
depend on (the config fields it reads, the model and dtype, the bundled data, the package versions, and
the results of the steps it reads), plus the size and hash of every file it wrote. A rerun reuses a step
only if its fingerprint is unchanged and all its files are intact; otherwise the old results are moved to
``stale/`` and the step runs again (see :meth:`RunFolder.status`). One run at a time: :meth:`lock`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from mechvalue.core.artifacts import file_sha256, package_versions, write_json_atomic
from mechvalue.core.errors import MechvalueError
from mechvalue.pipeline.config import STEPS, RunConfig

#: the steps whose results each step reads (a change upstream recomputes everything downstream)
UPSTREAM: dict[str, tuple[str, ...]] = {
    "judge": (), "valuelocate": (), "conva": (), "neva": (), "dual": ("judge",), "compliance": ("dual",),
    "steering": ("judge", "conva", "neva", "dual"),  # dual: the judge's validity on generations
    "circuits": ("valuelocate", "neva", "dual"),  # the overlaps with their neuron sets
    "audits": ("valuelocate", "neva", "dual"),  # dual: the neuron classes it explains
    "report": ("judge", "valuelocate", "conva", "neva", "dual", "compliance", "steering", "circuits", "audits"),
}
#: data folders read by one step only (their files enter that step's fingerprint, not every step's)
OWN_DATA: dict[str, tuple[str, ...]] = {"compliance": ("compliance",)}
_OWNED = {folder for folders in OWN_DATA.values() for folder in folders}
_NUMERIC_PACKAGES = ("mechvalue", "torch", "transformer-lens", "transformers", "numpy", "scikit-learn")


class RunFolderBusy(MechvalueError):
    """Another ``mechvalue run`` holds the folder's lock."""


def data_fingerprint(step: str | None = None) -> str:
    """Hash of the data files the loaders read (names and bytes): the bundled ones and, under
    :func:`~mechvalue.data.bundled.using_data`, the user's, which replace them. Without ``step``: every file
    but the folders one step owns (:data:`OWN_DATA`); with it: that step's own folders only."""
    from mechvalue.data.bundled import USER_DATA, data_dir

    h = hashlib.sha256()
    for root in (data_dir(), USER_DATA.get()):
        if root is None:
            continue
        h.update(b"user:" if root != data_dir() else b"")
        for p in sorted(root.rglob("*.jsonl")):
            rel = p.relative_to(root)
            if (rel.parts[0] in OWN_DATA.get(step, ())) if step else (rel.parts[0] not in _OWNED):
                h.update(str(rel).encode())
                h.update(file_sha256(p).encode())
    return h.hexdigest()[:16]


def shared_data_paths(rel: str) -> list[str]:
    """Where a public dataset may lie: ``<shared>/data/<rel>`` beside the repository or the working folder."""
    root = Path(__file__).resolve().parents[2]  # the repository
    return [str(p / "shared" / "data" / rel) for p in (root.parent, Path.cwd().parent)]


class RunFolder:
    """A run folder: where the artifacts go, the step records, and the shared objects built on first use
    (the model, the judge, MMLU, the pair features ConVA and NeVA share)."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._model = None
        self._judge = None
        self._data_fp: str | None = None
        self.pair_features: dict | None = None  # filled by the conva/neva steps (one pass over the pairs)
        self.t0 = time.time()

    # ------------------------------------------------------------------ lock

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for this process; a second run into it fails at once naming the holder's pid."""
        from filelock import FileLock, Timeout

        pid_file = self.out / ".run.pid"
        lock = FileLock(str(self.out / ".run.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            pid = pid_file.read_text().strip() if pid_file.exists() else "unknown"
            raise RunFolderBusy(f"run folder {self.out} in use by pid {pid}; wait for it or use another --out"
                                ) from None
        try:
            pid_file.write_text(str(os.getpid()))
            yield
        finally:
            pid_file.unlink(missing_ok=True)
            lock.release()

    # ------------------------------------------------------------------ fingerprints and step records

    def inputs(self, step: str) -> dict:
        """Everything ``step``'s results depend on (hashed into its fingerprint)."""
        if self._data_fp is None:
            self._data_fp = data_fingerprint()
        versions = package_versions()
        upstream = {u: (self.record(u) or {}).get("result_id") for u in UPSTREAM[step]}
        inputs = {"step": step, "config": self.config.section(step), "data": self._data_fp,
                  "versions": {k: versions.get(k) for k in _NUMERIC_PACKAGES}, "upstream": upstream}
        if step in OWN_DATA:
            inputs["own_data"] = data_fingerprint(step)
        return inputs

    def fingerprint(self, step: str) -> str:
        return hashlib.sha256(json.dumps(self.inputs(step), sort_keys=True, default=str).encode()).hexdigest()[:16]

    def wanted_steps(self) -> tuple[str, ...]:
        """The requested steps, plus the judge where a requested step uses it."""
        wanted = set(self.config.steps)
        if wanted & {"conva", "dual", "steering"}:
            wanted.add("judge")
        return tuple(s for s in STEPS if s in wanted)

    def record(self, step: str) -> dict | None:
        """The step's ``DONE.json`` (None if the step has not finished)."""
        path = self.out / step / "DONE.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            return None

    def status(self, step: str) -> tuple[bool, str]:
        """``(reusable, why)``: whether a finished step's results can be reused, and the one-line reason."""
        rec = self.record(step)
        if rec is None:
            return False, ("not run yet" if not (self.out / step).exists()
                           else "unfinished earlier: running again (resuming where the step can)")
        if "fingerprint" not in rec:
            return False, "made by an older mechvalue (no fingerprint): recomputing"
        if rec["fingerprint"] != self.fingerprint(step):
            return False, f"inputs changed ({self._diff(rec.get('inputs', {}), self.inputs(step))}): recomputing"
        for name, meta in rec.get("files", {}).items():
            p = self.out / step / name
            if not p.exists():
                return False, f"{step}/{name} is missing (deleted?): recomputing"
            if p.stat().st_size != meta["size"] or file_sha256(p) != meta["sha256"]:
                return False, f"{step}/{name} changed on disk: recomputing"
        return True, f"done earlier with the same inputs: reusing {self.out / step}"

    @staticmethod
    def _diff(old: dict, new: dict, prefix: str = "") -> str:
        changes = []
        for k in sorted(set(old) | set(new)):
            a, b = old.get(k), new.get(k)
            if a == b:
                continue
            if isinstance(a, dict) and isinstance(b, dict):
                changes.append(RunFolder._diff(a, b, f"{prefix}{k}."))
            else:
                changes.append(f"{prefix}{k}: {json.dumps(a, default=str)[:40]} -> {json.dumps(b, default=str)[:40]}")
        return "; ".join(c for c in changes if c)[:300] or "unknown"

    def retire(self, step: str) -> Path | None:
        """Move a step's old results to ``stale/<step>-<time>/`` (kept, never relabelled); None if none."""
        src = self.out / step
        if not src.exists():
            return None
        dest = self.out / "stale" / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dest))
        return dest

    def start(self, step: str) -> None:
        """Record that ``step`` is running with these inputs (an unfinished folder with other inputs is retired)."""
        started = self.out / step / "STARTED.json"
        if started.exists():
            try:
                same = json.loads(started.read_text()).get("fingerprint") == self.fingerprint(step)
            except (json.JSONDecodeError, OSError):
                same = False
            if not same:
                self.retire(step)
        write_json_atomic(self.out / step / "STARTED.json", {"step": step, "fingerprint": self.fingerprint(step)})

    def mark(self, step: str, seconds: float, **info) -> None:
        """Finish ``step``: its fingerprint, inputs, files (size and sha256) and info go to ``DONE.json``."""
        folder = self.out / step
        files = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": file_sha256(p)}
                 for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in ("DONE.json", "STARTED.json")}
        fp = self.fingerprint(step)
        write_json_atomic(folder / "DONE.json", {
            "step": step, "seconds": round(seconds, 1), "fingerprint": fp, "inputs": self.inputs(step),
            "result_id": f"{fp}-{time.time_ns()}", "files": files, **info})

    def done(self, step: str) -> bool:
        return self.status(step)[0]

    # ------------------------------------------------------------------ shared objects

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self):
        if self._model is None:
            from mechvalue.lm.models import load_model

            self._model = load_model(self.config.model, device=self.config.device, dtype=self.config.dtype,
                                     backend=self.config.backend, n_devices=self.config.n_devices)
        return self._model

    @property
    def judge(self):
        if self._judge is None:
            from mechvalue.evaluate.judges import ClassifierJudge

            path = self.out / "judge" / "classifier.safetensors"
            if path.exists():
                self._judge = ClassifierJudge.load(path, self.model)
            elif (shipped := ClassifierJudge.bundled(self.model)) is not None:
                self._judge = shipped
                shipped.save(path)
                write_json_atomic(self.out / "judge" / "metrics.json", shipped.meta.get("metrics", {}))
            else:
                self._judge = ClassifierJudge.train(self.model, progress=True)
                self._judge.save(path)
                write_json_atomic(self.out / "judge" / "metrics.json", self._judge.meta.get("metrics", {}))
        return self._judge

    def touche(self):
        """Touché23-ValueEval validation (``(DataFrame, folder)``) from ``$MECHVALUE_TOUCHE`` or the shared data
        beside the repository, or ``(None, None)``."""
        from mechvalue.data.public import load_touche

        candidates = [os.environ.get("MECHVALUE_TOUCHE")] + shared_data_paths("touche23_valueeval")
        for c in candidates:
            if c and (Path(c) / "arguments-validation.tsv").exists():
                return load_touche(c, "validation"), c
        return None, None

    def mmlu(self):
        from mechvalue.data.public import load_mmlu

        candidates = [self.config.mmlu] if self.config.mmlu else []
        if os.environ.get("MECHVALUE_MMLU"):
            candidates.append(os.environ["MECHVALUE_MMLU"])
        candidates += shared_data_paths("mmlu/mmlu_validation.csv")
        for c in candidates:
            if c and Path(c).exists():
                return load_mmlu(c), c
        if self.config.mmlu:
            raise MechvalueError(f"MMLU not found at {self.config.mmlu}")
        return None, None
