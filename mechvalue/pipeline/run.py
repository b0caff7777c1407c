"""The main job behind ``mechvalue run``: the four methods, evaluated, in one resumable run folder.

Steps (each writes into ``<out>/<step>/`` and a ``DONE.json`` marker; a finished step is
loaded, not recomputed, when the same folder is reused):

``judge``       the local classifier judge (relevance gate, judged scores, response labels)
``valuelocate`` value neurons per higher-order dimension, fraction vs tau, causal test vs random
``conva``       probe value vectors per value and layer, accuracy curves, cosine matrix
``neva``        sparse neuron probes, selected sets, Jaccard matrix
``dual``        intrinsic vs prompted vectors, SVD axes, neuron classes, causal tests, structure
``steering``    every method on every target, all ten values scored: CSR, leakage, NLR, NGLR,
                fluency, MMLU (:mod:`mechvalue.pipeline.study`)
``audits``      top-activating examples of the strongest located neurons
``report``      figures and ``report.html`` (:mod:`mechvalue.report.html`)
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from mechvalue.core.artifacts import package_versions, write_json_atomic
from mechvalue.pipeline.config import STEPS, RunConfig
from mechvalue.pipeline.folder import RunFolder
from mechvalue.pipeline.steps import STEP_FUNCTIONS, print_summary


def run_main(config: RunConfig) -> Path:
    """Run (or resume) every requested step of ``config``; print where the results are."""
    folder = RunFolder(config)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    wanted = config.steps
    config_path = folder.out / "config.json"
    previous = json.loads(config_path.read_text()) if config_path.exists() else {}
    record = {"command": "run", "config": config.to_json(), "values": list(config.values), "seed": config.seed,
              "quick": config.quick, "versions": package_versions(),
              "started": previous.get("started", time.strftime("%Y-%m-%dT%H:%M:%S"))}
    write_json_atomic(config_path, {**previous, **record})
    for step in STEPS:
        if step not in wanted and step != "judge":
            continue
        if step == "judge" and not any(s in wanted for s in ("conva", "dual", "steering")):
            continue
        if folder.done(step) and step != "report":
            print(f"[{step}] done earlier: reusing {folder.out / step}")
            continue
        print(f"[{step}] running ...", flush=True)
        t = time.time()
        info = STEP_FUNCTIONS[step](config, folder) or {}
        folder.mark(step, time.time() - t, **info)
        print(f"[{step}] finished in {time.time() - t:.0f} s", flush=True)
    final = json.loads(config_path.read_text())
    final.update({"wall_seconds_last_invocation": round(time.time() - folder.t0, 1)})
    if folder.model_loaded:
        from mechvalue.lm.models import model_info

        final["model"] = model_info(folder.model)
    write_json_atomic(config_path, final)
    print_summary(folder)
    return folder.out
