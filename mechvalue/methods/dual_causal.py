"""Dual mechanisms, part 4: alpha calibration and causal tests at one layer (methods.md §5.4, §5.10).

Steering with the four vector types (alpha calibrated on MMLU), scaling neuron classes,
random-direction and random-neuron controls, diversity; :func:`steering_step` is the resumable
step of :func:`mechvalue.methods.dual.run_dual`. Re-exported by :mod:`mechvalue.methods.dual`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechvalue.analysis.metrics import RESULT_COLUMNS, bootstrap_ci, distinct_n, ead_n, paired_difference, results_frame
from mechvalue.analysis.neurons import AngleClasses, NeuronSet, matched_random
from mechvalue.analysis.vectors import random_directions
from mechvalue.core.artifacts import write_json_atomic
from mechvalue.core.errors import MechvalueError
from mechvalue.core.values import canonical_list
from mechvalue.data.bundled import load_dilemmas, load_portraits, load_queries
from mechvalue.evaluate.scores import dilemma_preference, mmlu_accuracy, questionnaire
from mechvalue.interventions.install import AddVector, ScaleNeurons
from mechvalue.lm.generation import generate
from mechvalue.lm.prompts import chat
from mechvalue.methods.dual_responses import (
    NORMALIZE,
    STEERING_EXTRAS,
    VECTOR_TYPES,
    DualConfig,
    derived_seed,
    fingerprint,
)
from mechvalue.methods.dual_vectors import DualVectors

# ------------------------------------------------------------------ 5. causal tests

def steering_vectors(vectors: DualVectors, value: str, layer: int, normalize: str = "none"
                     ) -> dict[str, Float[Tensor, " d_model"]]:
    """The four vector types of one value at one layer: raw (``"none"``, the orthogonalised ones keep
    their reduced norm), unit norm, or unit times the mean response-activation norm at that layer."""
    if normalize not in NORMALIZE:
        raise MechvalueError(f"normalize must be one of {NORMALIZE}, not {normalize!r}")
    out = {k: vectors.get(k, value, layer) for k in VECTOR_TYPES}
    if normalize == "none":
        return out
    scale = 1.0 if normalize == "unit" else float(vectors.meta["resid_norm"][vectors.layers.index(layer)])
    return {k: v / v.norm() * scale for k, v in out.items()}


def calibrate_alpha(model, vector: Float[Tensor, " d_model"], layer: int, questions: Sequence, alphas: Sequence[float],
                    *, max_drop: float = 0.05, hook: str = "hook_resid_post") -> tuple[float, pd.DataFrame]:
    """Largest alpha of the grid (scanned upwards, stopping at the first failure) whose MMLU accuracy
    drop against no steering stays below ``max_drop``; the smallest alpha if none does (flagged)."""
    base = float(mmlu_accuracy(model, questions).mean())
    rows, best = [{"alpha": 0.0, "accuracy": base, "drop": 0.0, "passed": True}], None
    for a in sorted(alphas):
        acc = float(mmlu_accuracy(model, questions, AddVector(layer, vector, a, hook=hook)).mean())
        rows.append({"alpha": a, "accuracy": acc, "drop": base - acc, "passed": base - acc < max_drop})
        if not rows[-1]["passed"]:
            break
        best = a
    df = pd.DataFrame(rows).assign(n=len(questions), chosen=best if best is not None else min(alphas))
    return (best if best is not None else min(alphas)), df


def _subset(items: Sequence, n: int, seed: int) -> list:
    return [items[i] for i in np.sort(np.random.default_rng(seed).permutation(len(items))[:n])]


def _row(value: str, metric: str, est: float, lo: float, hi: float, n: int, **extra) -> dict:
    return {"method": "dual", "target": value, "value": value, "metric": metric, "estimate": est, "ci_low": lo,
            "ci_high": hi, "n": n, **extra}


def causal_tests(model, vectors: DualVectors, classes: pd.DataFrame, value: str, *, layer: int, alpha: float,
                 config: DualConfig, diversity_queries: Sequence[str] = (), progress: bool = False) -> pd.DataFrame:
    """Steering and neuron-scaling effects on one value's questionnaire and dilemma scores, plus diversity.

    Arms: the four vector types at ``alpha``; ``n_random`` random directions with the prompted
    vector's norm (per seed and pooled); each neuron class scaled by each beta, with ``n_random``
    random neuron sets of the same size per class (``neuron_class="random:<class>"``, avoiding
    classified neurons; per seed and pooled). Scores are paired against no intervention on the same
    items (bootstrap CIs).
    Corpus-level Distinct-2 and EAD-2 (V = the model's vocabulary size; no CI) of generations for
    ``diversity_queries`` under no steering and each vector type.
    """
    items = _subset(load_portraits(value), config.n_items, config.seed)
    dilemmas = _subset(load_dilemmas(value), config.n_dilemmas, config.seed)

    def scores(specs) -> dict[str, np.ndarray]:
        return {"questionnaire": questionnaire(model, items, specs).score.to_numpy(),
                "dilemma_pref": dilemma_preference(model, dilemmas, specs).pref.to_numpy()}

    base, hook = scores(()), config.hook
    vecs = steering_vectors(vectors, value, layer, config.steer_normalize)
    arms = [(k, {"vector_type": k, "alpha": alpha, "norm": float(vecs[k].norm())},
             AddVector(layer, vecs[k], alpha, hook=hook)) for k in VECTOR_TYPES]
    rand = random_directions(vecs["prompted"], config.n_random, seed=derived_seed(config.seed, value, "random"))
    arms += [("random_direction", {"vector_type": "random", "alpha": alpha, "seed": s, "norm": float(r.norm())},
              AddVector(layer, r, alpha, hook=hook)) for s, r in enumerate(rand)]
    mine = classes[(classes.value == value) & (classes.layer == layer)]
    members = {c: torch.tensor(mine[mine["class"] == c].neuron.tolist(), dtype=torch.long)
               for c in AngleClasses.NAMES}
    as_set = lambda idx: NeuronSet(torch.full((len(idx),), layer), idx, torch.zeros(len(idx)),  # noqa: E731
                                   torch.ones(len(idx), dtype=torch.long))
    kept = as_set(torch.tensor(mine.neuron.tolist(), dtype=torch.long))
    for beta in config.betas:
        for c, idx in ((c, idx) for c, idx in members.items() if len(idx)):
            arms.append(("neurons", {"neuron_class": c, "beta": beta, "n_neurons": len(idx)},
                         ScaleNeurons(layer, idx, beta)))
            for s in range(config.n_random):
                rnd = matched_random(as_set(idx), model.cfg.d_mlp, seed=derived_seed(config.seed, value, c, s),
                                     exclude=kept)
                arms.append(("random_neurons", {"neuron_class": f"random:{c}", "beta": beta, "seed": s,
                                                "n_neurons": len(rnd)}, ScaleNeurons(layer, rnd.indices, beta)))
    rows, pooled = [], {}
    for arm, extra, spec in tqdm(arms, desc=f"dual:steer {value}", disable=not progress):
        st = scores([spec])
        for metric, vals in st.items():
            rows.append(_row(value, f"delta_{metric}", *paired_difference(vals, base[metric]), len(vals), arm=arm,
                             **extra))
            if arm.startswith("random"):
                key = (arm, metric, extra.get("beta"), extra.get("neuron_class"), extra.get("n_neurons"))
                pooled.setdefault(key, []).append(vals - base[metric])
    for (arm, metric, beta, nclass, n_neurons), diffs in pooled.items():
        x = np.concatenate(diffs)
        rand_dir = arm == "random_direction"
        rows.append(_row(value, f"delta_{metric}", *bootstrap_ci(x), len(x), arm=f"{arm}_pooled", beta=beta,
                         neuron_class=nclass, n_neurons=n_neurons, vector_type="random" if rand_dir else None,
                         alpha=alpha if rand_dir else None))
    rows += _diversity(model, vecs, value, layer, alpha, config, diversity_queries)
    return results_frame(rows)


def _diversity(model, vecs, value, layer, alpha, config, queries) -> list[dict]:
    if not queries:
        return []
    prompts, texts = [chat(q) for q in queries], {}
    kw = dict(max_new_tokens=config.diversity_tokens, temperature=config.temperature,
              seed=derived_seed(config.seed, "diversity"), batch_size=config.batch_size)
    texts["base"] = generate(model, prompts, **kw).texts
    for k in VECTOR_TYPES:
        texts[k] = generate(model, prompts, AddVector(layer, vecs[k], alpha, hook=config.hook), **kw).texts
    vocab, rows = int(model.cfg.d_vocab), []
    for arm, t in texts.items():  # corpus-level scores: a bootstrap would duplicate responses (biased), so no CI
        for metric, est in (("distinct_2", distinct_n(t, 2)), ("ead_2", ead_n(t, 2, vocab_size=vocab))):
            rows.append(_row(value, metric, est, float("nan"), float("nan"), len(t), arm=arm,
                             vector_type=arm if arm != "base" else None, alpha=alpha if arm != "base" else 0.0,
                             ead_vocab=vocab))
    return rows


# ------------------------------------------------------------------ the steering step of run_dual

def _mmlu_questions(mmlu, n: int, seed: int) -> list:
    if mmlu is None or n <= 0:
        return []
    if isinstance(mmlu, str | Path):
        from mechvalue.data.public import load_mmlu

        mmlu = load_mmlu(mmlu)
    return _subset(list(mmlu), n, seed)


def steering_step(model, vectors, classes, values, layer, config, mmlu, out: Path, vec_fp: str, used_queries: set[str],
              progress: bool):
    prefer = canonical_list(config.steer_values) if config.steer_values is not None else list(values)
    steer = [v for v in dict.fromkeys([*prefer, *values])
             if v in values and v in vectors.finite_values(layer)][:config.max_steer]
    if not steer:
        return pd.DataFrame(columns=[*RESULT_COLUMNS, *STEERING_EXTRAS]), pd.DataFrame()
    questions = _mmlu_questions(mmlu, config.n_mmlu, config.seed)
    cal_fp = fingerprint([vec_fp, layer, steer, config.steer_normalize, config.alphas, config.alpha,
                           config.max_mmlu_drop, config.hook, [(q.question, q.answer) for q in questions]])
    cal_path = out / "alpha.json"
    cal = json.loads(cal_path.read_text()) if cal_path.exists() else {}
    if cal.get("fingerprint") != cal_fp:
        table = pd.DataFrame()
        if config.alpha is not None:
            alpha, source = float(config.alpha), "fixed (config.alpha)"
        elif not questions:
            alpha, source = float(min(config.alphas)), "uncalibrated: no MMLU questions given (smallest alpha)"
        else:
            norms = {v: float(steering_vectors(vectors, v, layer, config.steer_normalize)["prompted"].norm())
                     for v in steer}
            ref = max(norms, key=norms.get)
            vec = steering_vectors(vectors, ref, layer, config.steer_normalize)["prompted"]
            alpha, table = calibrate_alpha(model, vec, layer, questions, config.alphas, max_drop=config.max_mmlu_drop,
                                           hook=config.hook)
            passed = bool(table.passed.iloc[1:].any())
            source = f"MMLU calibration on {ref}'s prompted vector" + ("" if passed else ": no alpha passed")
        cal = {"fingerprint": cal_fp, "alpha": alpha, "source": source, "table": table.to_dict("records")}
        write_json_atomic(cal_path, cal)
    alpha = float(cal["alpha"])
    pool = [q for q in load_queries() if q.id not in used_queries]  # diversity: queries not used for the vectors
    div = [q.text for q in _subset(pool, config.n_diversity, config.seed + 1)] if config.n_diversity else []
    frames = []
    for v in steer:
        knobs = {k: getattr(config, k) for k in ("betas", "n_random", "n_items", "n_dilemmas", "diversity_tokens",
                                                 "temperature", "seed", "steer_normalize", "hook", "batch_size")}
        fp = fingerprint([cal_fp, alpha, knobs, div, classes[classes.value == v].to_dict("records")])
        path = out / "steering" / f"{v}.json"
        part = json.loads(path.read_text()) if path.exists() else {}
        if part.get("fingerprint") != fp:
            df = causal_tests(model, vectors, classes, v, layer=layer, alpha=alpha, config=config,
                              diversity_queries=div, progress=progress)
            part = {"fingerprint": fp, "rows": json.loads(df.to_json(orient="records"))}
            write_json_atomic(path, part)
        frames.append(pd.DataFrame(part["rows"]))
    steering = results_frame(pd.concat(frames, ignore_index=True).to_dict("records")).assign(alpha_source=cal["source"])
    steering = steering.reindex(columns=[*RESULT_COLUMNS, *STEERING_EXTRAS])
    return steering, pd.DataFrame(cal["table"]).assign(alpha_source=cal["source"])
