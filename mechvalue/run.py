"""The main job behind ``mechvalue run``: the four methods, evaluated, in one resumable run folder.

Steps (each writes into ``<out>/<step>/`` and a ``DONE.json`` marker; a finished step is
loaded, not recomputed, when the same folder is reused):

``judge``       the local classifier judge (relevance gate, judged scores, response labels)
``valuelocate`` value neurons per higher-order dimension, fraction vs tau, causal test vs random
``conva``       probe value vectors per value and layer, accuracy curves, cosine matrix
``neva``        sparse neuron probes, selected sets, Jaccard matrix
``dual``        intrinsic vs prompted vectors, SVD axes, neuron classes, causal tests, structure
``steering``    every method on every target, all ten values scored: CSR, leakage, NLR, NGLR,
                fluency, MMLU (:mod:`mechvalue.study`)
``audits``      top-activating examples of the strongest located neurons
``report``      figures and ``report.html`` (:mod:`mechvalue.report`)
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._io import package_versions, write_json_atomic
from .errors import MechvalueError
from .values import canonical_list

STEPS = ("judge", "valuelocate", "conva", "neva", "dual", "steering", "audits", "report")
QUICK_VALUES = ["power", "benevolence"]


@dataclass
class RunConfig:
    """Everything a run depends on (recorded in ``config.json``). Config files use these names."""

    model: str | None = None
    values: list[str] | None = None
    device: str | None = None
    dtype: str = "float32"
    out: str = "runs/default"
    seed: int = 0
    quick: bool = False
    batch_size: int = 16
    steps: list[str] | None = None
    mmlu: str | None = None
    vl_max_questions: int = 40
    vl_tau: float = 0.03
    vl_causal_tau: float | str = "fdr"
    vl_factor: float = 3.0
    vl_n_random: int = 3
    vl_dilemmas_per_value: int = 2
    vl_items_per_value: int = 4
    neva_budget: float = 0.001
    neva_C: float = 0.1
    n_audits: int = 4
    study: dict = field(default_factory=dict)
    dual: dict = field(default_factory=dict)

    @classmethod
    def from_args(cls, args) -> RunConfig:
        file_cfg = dict(getattr(args, "config", None) or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(file_cfg) - names - {"config"})
        if unknown:
            raise MechvalueError(f"unknown config keys {unknown}; valid: {sorted(names)}")
        cfg = cls(**{k: v for k, v in file_cfg.items() if k in names})
        for name in names:
            v = getattr(args, name, None)
            if v is not None and v is not False:
                setattr(cfg, name, v)
        if isinstance(cfg.values, str):
            cfg.values = [v for v in cfg.values.split(",") if v]
        if isinstance(cfg.steps, str):
            cfg.steps = [s for s in cfg.steps.split(",") if s]
        bad = [s for s in cfg.steps or [] if s not in STEPS]
        if bad:
            raise MechvalueError(f"unknown steps {bad}; choose from {', '.join(STEPS)}")
        if cfg.quick:
            cfg.vl_max_questions, cfg.vl_n_random, cfg.vl_dilemmas_per_value, cfg.vl_items_per_value = 8, 1, 1, 2
            cfg.n_audits = 2
            cfg.values = cfg.values or QUICK_VALUES
        cfg.values = canonical_list(cfg.values)
        return cfg


class Run:
    """A run folder: config, step markers, artifacts, and lazily built shared objects."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._model = None
        self._judge = None
        self.t0 = time.time()

    @property
    def model(self):
        if self._model is None:
            from .models import load_model, model_info

            self._model = load_model(self.cfg.model, device=self.cfg.device, dtype=self.cfg.dtype)
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
            from .judges import ClassifierJudge

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
        from .public_data import load_mmlu

        candidates = [self.cfg.mmlu] if self.cfg.mmlu else []
        if os.environ.get("MECHVALUE_MMLU"):
            candidates.append(os.environ["MECHVALUE_MMLU"])
        root = Path(__file__).resolve().parents[1]
        candidates += [str(p / "mmlu" / "mmlu_validation.csv") for p in (root.parent / "shared" / "data",
                                                                          Path.cwd().parent / "shared" / "data")]
        for c in candidates:
            if c and Path(c).exists():
                return load_mmlu(c), c
        if self.cfg.mmlu:
            raise MechvalueError(f"MMLU not found at {self.cfg.mmlu}")
        return None, None


def run_main(args) -> Path:
    """Run (or resume) every requested step; print where the results are."""
    from . import steps

    cfg = RunConfig.from_args(args)
    run = Run(cfg)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    wanted = cfg.steps or list(STEPS)
    config_path = run.out / "config.json"
    previous = json.loads(config_path.read_text()) if config_path.exists() else {}
    record = {"command": "run", "config": dataclasses.asdict(cfg), "values": cfg.values, "seed": cfg.seed,
              "quick": cfg.quick, "versions": package_versions(),
              "started": previous.get("started", time.strftime("%Y-%m-%dT%H:%M:%S"))}
    write_json_atomic(config_path, {**previous, **record})
    for step in STEPS:
        if step not in wanted and step != "judge":
            continue
        if step == "judge" and not any(s in wanted for s in ("conva", "dual", "steering")):
            continue
        if run.done(step) and step != "report":
            print(f"[{step}] done earlier: reusing {run.out / step}")
            continue
        print(f"[{step}] running ...", flush=True)
        t = time.time()
        info = getattr(steps, f"step_{step}")(run) or {}
        run.mark(step, time.time() - t, **info)
        print(f"[{step}] finished in {time.time() - t:.0f} s", flush=True)
    model_info = {}
    if run._model is not None:
        from .models import model_info as _info

        model_info = _info(run._model)
    final = json.loads(config_path.read_text())
    final.update({"wall_seconds_last_invocation": round(time.time() - run.t0, 1)})
    if model_info:
        final["model"] = model_info
    write_json_atomic(config_path, final)
    steps.print_summary(run)
    return run.out
