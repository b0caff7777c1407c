"""The run folder of ``mechvalue run``: where artifacts go, step markers, and shared objects built once.

:class:`RunFolder` loads the model and the judge on first use, finds MMLU, and holds the pair features
that the ConVA and NeVA steps share (one pass over the pairs).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mechvalue.core.artifacts import write_json_atomic
from mechvalue.core.errors import MechvalueError
from mechvalue.pipeline.config import RunConfig


class RunFolder:
    """A run folder: where the artifacts go, the step markers, and the shared objects built on first use
    (the model, the judge, MMLU, the pair features ConVA and NeVA share)."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._model = None
        self._judge = None
        self.pair_features: dict | None = None  # filled by the conva/neva steps (one pass over the pairs)
        self.t0 = time.time()

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self):
        if self._model is None:
            from mechvalue.lm.models import load_model, model_info

            self._model = load_model(self.config.model, device=self.config.device, dtype=self.config.dtype)
            path = self.out / "config.json"
            cfg = json.loads(path.read_text()) if path.exists() else {}
            write_json_atomic(path, {**cfg, "model": model_info(self._model)})
        return self._model

    def done(self, step: str) -> bool:
        return (self.out / step / "DONE.json").exists()

    def mark(self, step: str, seconds: float, **info) -> None:
        write_json_atomic(self.out / step / "DONE.json", {"step": step, "seconds": round(seconds, 1), **info})

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

    def mmlu(self):
        from mechvalue.data.public import load_mmlu

        candidates = [self.config.mmlu] if self.config.mmlu else []
        if os.environ.get("MECHVALUE_MMLU"):
            candidates.append(os.environ["MECHVALUE_MMLU"])
        root = Path(__file__).resolve().parents[2]  # the repository
        candidates += [str(p / "mmlu" / "mmlu_validation.csv") for p in (root.parent / "shared" / "data",
                                                                          Path.cwd().parent / "shared" / "data")]
        for c in candidates:
            if c and Path(c).exists():
                return load_mmlu(c), c
        if self.config.mmlu:
            raise MechvalueError(f"MMLU not found at {self.config.mmlu}")
        return None, None
