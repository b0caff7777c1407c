"""The main job behind ``mechvalue run``: the four methods, evaluated, in one resumable run folder.

Steps (each writes into ``<out>/<step>/`` and a ``DONE.json`` record; see :mod:`mechvalue.pipeline.folder`):

``judge``       the local classifier judge (relevance gate, judged scores, response labels)
``valuelocate`` value neurons per higher-order dimension, fraction vs tau, causal test vs random
``conva``       probe value vectors per value and layer, accuracy curves, cosine matrix
``neva``        sparse neuron probes, selected sets, Jaccard matrix
``dual``        intrinsic vs prompted vectors, SVD axes, neuron classes, causal tests, structure
``steering``    every method on every target, all ten values scored: CSR, leakage, NLR, NGLR,
                fluency, MMLU (:mod:`mechvalue.pipeline.study`)
``circuits``    where a value system prompt changes dilemma choices: AtP, DLA, exact patching
                (:mod:`mechvalue.pipeline.circuits`)
``audits``      top-activating examples of the strongest located neurons
``report``      figures and ``report.html`` (:mod:`mechvalue.report.html`)

A rerun into the same folder reuses a step only when everything its results depend on is unchanged
(config fields it reads, model, dtype, data, package versions, upstream results) and its files are
intact; it says so in one line per step. Results made with other inputs are moved to ``stale/``, never
relabelled, so ``config.json`` always describes what the folder holds. ``force`` recomputes named steps
(and, through the fingerprints, everything downstream of them).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable
from pathlib import Path

import torch

from mechvalue.core.artifacts import package_versions, write_json_atomic
from mechvalue.core.errors import MechvalueError
from mechvalue.pipeline.config import STEPS, RunConfig
from mechvalue.pipeline.folder import RunFolder
from mechvalue.pipeline.steps import STEP_FUNCTIONS, print_summary


def _say(step: str, message: str) -> None:
    print(f"[{step}] {message}", flush=True)


def _write_config(folder: RunFolder, config: RunConfig, started: str, extra: dict | None = None) -> None:
    """``config.json``: this config, versions, and each step's record (what the folder holds)."""
    steps = {}
    for s in STEPS:
        rec = folder.record(s)
        if rec is not None:
            steps[s] = {"fingerprint": rec.get("fingerprint"), "seconds": rec.get("seconds"),
                        "config": (rec.get("inputs") or {}).get("config")}
    record = {"command": "run", "config": config.to_json(), "values": list(config.values), "seed": config.seed,
              "quick": config.quick, "versions": package_versions(), "started": started, "steps": steps,
              "wall_seconds_per_step": {s: r["seconds"] for s, r in steps.items()},
              **(extra or {})}
    write_json_atomic(folder.out / "config.json", record)


def run_main(config: RunConfig, force: Iterable[str] = ()) -> Path:
    """Run (or resume) every requested step of ``config``; ``force`` names steps to recompute regardless."""
    force = tuple(force)
    bad = [s for s in force if s not in STEPS]
    if bad:
        raise MechvalueError(f"--force-step {bad}: unknown step; choose from {', '.join(STEPS)}")
    from mechvalue.data.bundled import using_data

    with using_data(config.data):  # the user's files (validated here, before any model loads) replace bundled ones
        folder = RunFolder(config)
        with folder.lock():
            return _run_locked(config, folder, force)


def _run_locked(config: RunConfig, folder: RunFolder, force: tuple[str, ...]) -> Path:
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    wanted = folder.wanted_steps()
    config_path = folder.out / "config.json"
    previous = json.loads(config_path.read_text()) if config_path.exists() else {}
    started = previous.get("started", time.strftime("%Y-%m-%dT%H:%M:%S"))
    for step in STEPS:  # results this config did not make are retired first, requested or not
        if step in wanted or folder.record(step) is None:
            continue
        ok, why = folder.status(step)
        if not ok:
            _say(step, f"{why.removesuffix(': recomputing')}: moved to {folder.retire(step)} "
                       f"(add --steps {step} to recompute)")
    _write_config(folder, config, started)
    for step in wanted:
        ok, why = folder.status(step)
        if step in force:
            ok, why = False, "--force-step: recomputing"
        if step != "report":  # the report is rebuilt from whatever the folder holds, every time
            if ok:
                _say(step, why)
                continue
            if folder.record(step) is not None or step in force:
                moved = folder.retire(step)
                _say(step, f"{why}{f' (old results in {moved})' if moved else ''}")
            elif (folder.out / step).exists():
                _say(step, why)
        _say(step, "running ...")
        t = time.time()
        folder.start(step)
        info = STEP_FUNCTIONS[step](config, folder) or {}
        folder.mark(step, time.time() - t, **info)
        _say(step, f"finished in {time.time() - t:.0f} s")
        _write_config(folder, config, started)
    extra = {"wall_seconds_last_invocation": round(time.time() - folder.t0, 1)}
    if folder.model_loaded:
        from mechvalue.lm.models import model_info

        extra["model"] = model_info(folder.model)
    elif "model" in previous and all(previous.get("config", {}).get(k) == getattr(config, k)
                                     for k in ("model", "dtype")):
        extra["model"] = previous["model"]
    _write_config(folder, config, started, extra)
    print_summary(folder)
    return folder.out
