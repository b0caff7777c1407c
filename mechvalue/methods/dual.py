"""Dual mechanisms of value expression (Han et al., arXiv 2509.24319): intrinsic vs prompted value vectors.

Follows methods.md §5; the parts marked [INF] there are choices recorded in the outputs:

1. responses to neutral queries without a system prompt (intrinsic) and, per value, under one of
   its value-priority system prompts (prompted), labelled by a judge with a threshold; cached
   as JSONL (appended per batch, finished rows skipped on a rerun);
2. difference-in-means vectors of token-averaged response activations per value, layer and
   condition (§5.3); intrinsic: exp vs unexp among the intrinsic responses; prompted: exp vs
   unexp among that value's prompted responses (``contrast="within"``) or prompted exp vs
   intrinsic unexp (``"vs_intrinsic"``); empty groups fall back along a recorded chain;
3. orthogonalisation, SVD shared/unique axes, ``W_out`` angle classes (§5.5-5.7);
4. causal tests at one layer: steering with the four vector types (alpha calibrated on MMLU),
   scaling neuron classes, random-direction and random-neuron controls, diversity (§5.4, §5.10);
5. structure: mean delta direction, circumplex PCA + Procrustes, cosine matrix (§5.8-5.9).

:func:`run_dual` runs it all, resumable, in one output folder. The parts live in
:mod:`.dual_responses` (config, responses, labels), :mod:`.dual_vectors` (vectors, axes, neuron
classes, structure) and :mod:`.dual_causal` (alpha calibration, causal tests); every public name
is re-exported here.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from mechvalue.core.artifacts import load_tensors, save_tensors, write_json_atomic
from mechvalue.core.errors import MechvalueError
from mechvalue.core.hooks import check_layers
from mechvalue.core.values import VALUES, canonical_list, load_angles
from mechvalue.evaluate.validity import judge_validity
from mechvalue.lm.models import model_info
from mechvalue.methods.dual_causal import calibrate_alpha, causal_tests, steering_step, steering_vectors
from mechvalue.methods.dual_responses import (
    CONTRASTS,
    NORMALIZE,
    STEERING_EXTRAS,
    VECTOR_TYPES,
    DualConfig,
    fingerprint,
    generate_responses,
    judge_name,
    label_responses,
    plan_responses,
)
from mechvalue.methods.dual_vectors import (
    DualVectors,
    contrast_groups,
    dual_axes,
    neuron_classes,
    response_features,
    structure,
    value_vectors,
)

__all__ = ["CONTRASTS", "NORMALIZE", "STEERING_EXTRAS", "VECTOR_TYPES", "DualConfig", "DualVectors", "calibrate_alpha",
           "causal_tests", "contrast_groups", "dual_axes", "generate_responses", "judge_name", "label_responses",
           "neuron_classes", "plan_responses", "response_features", "run_dual", "steering_vectors", "structure",
           "value_vectors"]


# ------------------------------------------------------------------ 7. the pipeline

def _features_cached(model, rows: list[dict], layers: list[int], path: Path, config: DualConfig,
                     progress: bool) -> Tensor:
    """Response features, reusing rows already in ``path`` (same model, layers, hook and response text)."""
    info = model_info(model)
    keys = [f"{r['id']}#{zlib.crc32(r['response'].encode())}" for r in rows]
    want = {"model_id": info.get("model_id"), "processing": info.get("processing"), "layers": layers,
            "hook": config.hook}
    have: dict[str, Tensor] = {}
    if path.exists():
        t, meta = load_tensors(path, kind="DualFeatures")
        if all(meta.get(k) == v for k, v in want.items()):
            have = dict(zip(meta["keys"], t["features"]))
    todo = [k for k, key in enumerate(keys) if key not in have]
    if todo:
        new = response_features(model, [rows[k] for k in todo], layers, hook=config.hook,
                                batch_size=config.batch_size, progress=progress)
        have.update({keys[k]: f for k, f in zip(todo, new)})
        save_tensors(path, {"features": torch.stack([have[k] for k in keys])}, {"kind": "DualFeatures", **want,
                                                                               "keys": keys})
    return torch.stack([have[k] for k in keys])


def run_dual(model, out_dir: str | Path, values: Sequence[str] | None = None, config: DualConfig | None = None,
             judge=None, mmlu=None, progress: bool = True) -> dict[str, pd.DataFrame | dict]:
    """The whole dual-mechanism pipeline into ``out_dir``, resumable (outputs reused when their inputs match).

    ``judge``: any object with ``judge(texts, value) -> scores`` (default: the lexicon judge);
    ``mmlu``: MMLU questions or a path for the alpha calibration (None: no calibration, the
    smallest alpha or ``config.alpha``). Writes responses.jsonl, labels.jsonl, features.safetensors,
    vectors.safetensors, groups.csv, cosines.csv, neuron_classes.csv, class_counts.csv, alpha.json,
    calibration.csv, steering/*.json, steering.csv, circumplex.csv, cosine_matrix*.csv, structure.json.
    """
    config = config or DualConfig()
    values = [v for v in VALUES if v in canonical_list(values)]
    clock, seconds = [time.perf_counter(), time.process_time()], {}

    def tick(step: str) -> None:
        seconds[step] = round(time.perf_counter() - clock[0], 2)
        seconds[f"{step}_cpu"] = round(time.process_time() - clock[1], 2)
        clock[:] = [time.perf_counter(), time.process_time()]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = model_info(model)
    layers = check_layers(model, list(config.layers) if config.layers is not None else None)
    layer = check_layers(model, config.layer if config.layer is not None else model.cfg.n_layers // 2)[0]
    if layer not in layers:
        raise MechvalueError(f"the analysis layer {layer} is not among the extraction layers {layers}")
    if judge is None:
        from mechvalue.evaluate.judges import LexiconJudge

        judge = LexiconJudge()
    if not callable(getattr(judge, "judge", None)):
        raise MechvalueError(f"judge must have a judge(texts, value) method; got a {type(judge).__name__}")
    threshold = float(config.threshold if config.threshold is not None else getattr(judge, "threshold", 0.5))
    model_meta = {"model_id": info.get("model_id"), "processing": info.get("processing")}
    write_json_atomic(out / "dual_config.json", {"config": asdict(config), "values": values, "layer": layer,
                                                 "judge": judge_name(judge), "threshold": threshold, **model_meta})
    responses = generate_responses(model, plan_responses(values, config), out / "responses.jsonl", config=config,
                                   progress=progress)
    tick("responses")
    labels = label_responses(responses, judge, values, out / "labels.jsonl", threshold=threshold)
    tick("labels")
    used = [r for r in responses if r["response"].strip()]
    vec_fp = fingerprint([[(r["id"], r["response"]) for r in used], labels.sort_values(["id", "value"]).to_dict(
        "records"), layers, config.hook, config.contrast, config.min_group, model_meta])
    vpath = out / "vectors.safetensors"
    vectors = DualVectors.load(vpath, model=model) if vpath.exists() else None
    if vectors is None or vectors.meta.get("fingerprint") != vec_fp:
        feats = _features_cached(model, used, layers, out / "features.safetensors", config, progress)
        vectors = value_vectors(feats, used, labels, values, layers, contrast=config.contrast,
                                min_group=config.min_group, meta={**model_meta, "hook": config.hook,
                                                                  "judge": judge_name(judge), "threshold": threshold,
                                                                  "fingerprint": vec_fp})
        vectors.save(vpath)
    tick("vectors")
    res: dict = {"responses": pd.DataFrame(responses), "labels": labels,
                 "groups": pd.DataFrame(vectors.meta["groups"]), "cosines": vectors.cosines(),
                 "judge_validity": judge_validity(labels, values)}
    res["neuron_classes"], res["class_counts"] = neuron_classes(
        model, vectors, layer=layer, top_frac=config.top_frac, max_angle=config.max_angle, signed=config.signed,
        normalize=config.normalize_axes)
    tick("neuron_classes")
    angles = load_angles(config.angles_path) if config.angles_path else None
    res["circumplex"], mats, res["structure"] = structure(vectors, layer, normalize=config.normalize_axes,
                                                          angles=angles, n_permutations=config.n_permutations,
                                                          seed=config.seed)
    tick("structure")
    res["cosine_matrix"] = mats.get("shared", pd.DataFrame(columns=["value"]))
    res["steering"], res["calibration"] = steering_step(model, vectors, res["neuron_classes"], values, layer, config,
                                                    mmlu, out, vec_fp, {r["query_id"] for r in responses},
                                                    progress)
    tick("steering")
    res["structure"].update(alpha=float(res["steering"].alpha.dropna().iloc[0]) if len(res["steering"]) else None,
                            judge=judge_name(judge), threshold=threshold, seconds=seconds, **model_meta)
    for name in ("groups", "judge_validity", "cosines", "neuron_classes", "class_counts", "steering", "calibration",
                 "circumplex", "cosine_matrix"):
        res[name].to_csv(out / f"{name}.csv", index=False)
    for kind in ("intrinsic", "prompted"):
        if kind in mats:
            mats[kind].to_csv(out / f"cosine_matrix_{kind}.csv", index=False)
    write_json_atomic(out / "structure.json", res["structure"])
    return res
