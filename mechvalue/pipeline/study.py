"""The steering study: every method on every target value, every value scored (issues #8, #9).

For each target value ``t`` and each arm (no edit, a value system prompt, CAA, ConVA without
and with its relevance gate, NeVA, NeVA's edit on matched random neurons) the same items are
scored:

- judged: greedy generations for value-relevant prompts (the questions of a sample of the
  target's dilemmas, as ConVA evaluates on value-related questions), scored by a judge on all
  ten values (``[query, value]``): the target column gives control success
  (CSR: score > 0.5 counts as "yes"), the others the leakage row; fluency is the perplexity
  of the generation under the unmodified model, diversity its Distinct-2;
- judge-free (the primary instruments: one forward pass per item, every item): dilemma preference on
  every one of the target's dilemmas (log P(value answer) - log P(conflicting answer), nats) and the
  expected 1-6 rating of every one of the target's portrait items (questionnaire points);
- matched random controls (``n_controls`` per arm of ``control_arms``: same-norm random directions for
  the vector methods, matched random neurons for NeVA), scored judge-free on the same items;
- capability: MMLU accuracy on a slice of questions per target (pooled over targets), the
  arm's edit and gate active.

Everything is paired on the same items: against base, against the mean of the matched random
controls and against the value system prompt (:func:`comparisons`: bootstrap CI, paired t-test, the
minimum detectable effect at 80% power, and Benjamini-Hochberg over the targets x arms of each
comparison and metric). Dilemmas and portraits are never used to fit a vector or select a neuron
(those use the context-controlled pairs): every steering number is on held-out items. Leakage
matrices, NLR and NGLR follow :mod:`mechvalue.analysis.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mechvalue.analysis.metrics import (
    bootstrap_ci,
    distinct_n,
    nglr_group_group,
    nglr_target_group,
    nlr,
    paired_difference,
)
from mechvalue.analysis.stats import mde
from mechvalue.core.errors import MechvalueError
from mechvalue.core.values import VALUES
from mechvalue.evaluate.judges import judge_many
from mechvalue.evaluate.scores import dilemma_preference, mmlu_accuracy, perplexity, questionnaire
from mechvalue.lm.generation import generate
from mechvalue.lm.prompts import chat
from mechvalue.methods.registry import METHOD_NAMES, SteeringInputs, build_all
from mechvalue.pipeline.comparisons import comparisons, item_scores

ARMS = METHOD_NAMES  # one arm per registered steering method


@dataclass
class StudyConfig:
    """Sizes of the study. The judge-free instruments run at full size (every dilemma and portrait item of the
    target, 10 random controls); generations (8 per target and arm) and MMLU (100 per arm) are what the CPU
    budget cut: 24 generations and 200 MMLU questions per arm took about 7 minutes for the first target on 2 cores.

    ``n_queries``: generations per target and arm; ``n_dilemmas``: the target's dilemmas scored per arm (0 = all
    of them; its portrait items are always all scored); ``n_mmlu``: MMLU questions per arm of ``mmlu_arms``
    (spread over the targets); ``n_controls``: distinct matched random controls per arm of ``control_arms``,
    scored judge-free (see :func:`score_control`).
    """

    n_queries: int = 8
    max_new_tokens: int = 32
    n_dilemmas: int = 0
    n_mmlu: int = 100
    mmlu_arms: tuple[str, ...] = ("base", "conva_nogate", "conva")
    n_controls: int = 10
    control_arms: tuple[str, ...] = ("caa", "conva_nogate", "neva")
    caa_coefficient: float = 1.0
    gate_threshold: float = 0.5
    gate_all: bool = False
    batch_size: int = 16
    seed: int = 0

    @classmethod
    def quick(cls) -> StudyConfig:
        return cls(n_queries=3, max_new_tokens=16, n_dilemmas=4, n_mmlu=8, n_controls=2)

    def __post_init__(self):
        for name in ("n_queries", "max_new_tokens", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise MechvalueError(f"study.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("n_dilemmas", "n_mmlu", "n_controls"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise MechvalueError(f"study.{name} must be an integer >= 0 (0: all / none), got "
                                     f"{getattr(self, name)!r}")
        bad = [a for a in (*self.mmlu_arms, *self.control_arms) if a not in METHOD_NAMES]
        if bad:
            raise MechvalueError(f"study: unknown arms {bad}; choose from {', '.join(METHOD_NAMES)}")


def prompt_gate(judge, value: str, threshold: float) -> Callable[[list[str]], np.ndarray]:
    """``texts -> bools``: the judge's relevance of each prompt to ``value`` is at least ``threshold``."""
    if not 0 <= threshold <= 1:
        raise MechvalueError(f"gate threshold must be in [0, 1], got {threshold}")
    return lambda texts: np.asarray(judge.relevance(list(texts), value)) >= threshold


def build_arms(target: str, *, vectors, neva: Sequence, random_neurons: Sequence, judge, cfg: StudyConfig,
               system_prompt: str, p0: float) -> dict[str, tuple[object, str | None]]:
    """``arm -> (interventions, system prompt)`` for one target value, one arm per registered steering method.

    ``vectors``: the target's ConVA :class:`~mechvalue.methods.conva.ValueVectors`; ``neva`` and
    ``random_neurons``: NeVA's edit specs on its selected neurons and on matched random ones.
    ConVA runs with and without the judge's relevance gate; CAA, NeVA and the random-neuron
    control run ungated unless ``cfg.gate_all`` (then behind the same gate as ConVA).
    See :data:`mechvalue.methods.registry.STEERING_METHODS`.
    """
    inputs = SteeringInputs(target, vectors=vectors, neva=tuple(neva), random_neurons=tuple(random_neurons),
                            system_prompt=system_prompt, gate=prompt_gate(judge, target, cfg.gate_threshold),
                            p0=p0, caa_coefficient=cfg.caa_coefficient, gate_all=cfg.gate_all)
    return build_all(inputs, ARMS)


def score_arm(model, arm: str, interventions, system: str | None, *, target: str, queries: Sequence[str], dilemmas,
              mmlu, judge, cfg: StudyConfig, portraits=None) -> dict:
    """Raw per-item measurements of one arm for one target (lists, JSON-friendly)."""
    prompts = [chat(q, system=system) for q in queries]
    gen = generate(model, prompts, interventions, max_new_tokens=cfg.max_new_tokens, temperature=0.0,
                   seed=cfg.seed, batch_size=cfg.batch_size)
    judged = judge_many(judge, gen.texts, VALUES)  # [query, value]
    ppl = perplexity(model, [chat(q) for q in queries], gen.texts, batch_size=cfg.batch_size)
    dil = dilemma_preference(model, dilemmas, interventions, system=system, batch_size=cfg.batch_size)
    out = {"arm": arm, "target": target, "texts": gen.texts, "judged": judged.tolist(), "ppl": ppl.tolist(),
           "dilemma_pref": dil.pref.tolist(), "dilemma_win": dil.win.tolist()}
    if portraits:
        q = questionnaire(model, portraits, interventions, system=system, batch_size=cfg.batch_size)
        out.update(portrait_score=q.score.tolist(), portrait_value=q.value.tolist())
    if mmlu and arm in cfg.mmlu_arms:
        out["mmlu"] = mmlu_accuracy(model, mmlu, interventions, batch_size=cfg.batch_size).tolist()
    return out


def score_control(model, arm: str, controls: Sequence, *, target: str, dilemmas, portraits, cfg: StudyConfig) -> dict:
    """Judge-free measurements of ``arm``'s matched random controls on the target's dilemmas and portrait items.

    Item ``i`` is scored under control ``i mod len(controls)``: every item meets one random draw and the draws
    cover the items evenly, so the paired difference "arm - random" estimates the gain over a random control
    with the spread between draws included, at the cost of one pass over the items (not one per control).
    """
    k = len(controls)
    if k == 0:
        raise MechvalueError(f"{arm}: no random controls to score")
    pref, score_ = np.full(len(dilemmas), np.nan), np.full(len(portraits), np.nan)
    for j, c in enumerate(controls):
        di = list(range(j, len(dilemmas), k))
        pi = list(range(j, len(portraits), k))
        if di:
            pref[di] = dilemma_preference(model, [dilemmas[i] for i in di], c, batch_size=cfg.batch_size).pref
        if pi:
            score_[pi] = questionnaire(model, [portraits[i] for i in pi], c, batch_size=cfg.batch_size).score
    return {"arm": arm, "target": target, "n_controls": k, "dilemma_pref": pref.tolist(),
            "portrait_score": score_.tolist(), "dilemma_control": [i % k for i in range(len(dilemmas))],
            "portrait_control": [i % k for i in range(len(portraits))]}


# ------------------------------------------------------------------ analysis (pure)

def judged_array(records: Sequence[dict], arm: str, targets: Sequence[str]) -> np.ndarray:
    """``[target, query, value]`` judged scores of ``arm``."""
    by = {(r["arm"], r["target"]): r for r in records}
    missing = [t for t in targets if (arm, t) not in by]
    if missing:
        raise MechvalueError(f"no records of arm {arm!r} for targets {missing}")
    return np.stack([np.asarray(by[(arm, t)]["judged"], float) for t in targets])


def leakage_matrix(steered: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``[target, value]`` mean paired score change over queries (inputs ``[target, query, value]``)."""
    if steered.shape != base.shape or steered.ndim != 3:
        raise MechvalueError(f"steered and base must both be [target, query, value], got {steered.shape}, "
                             f"{base.shape}")
    return (steered - base).mean(1)


def nlr_ci(steered: np.ndarray, base: np.ndarray, targets: Sequence[str], *, n_boot: int = 500,
           seed: int = 0) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Per-target NLR and the mean NLR with a bootstrap CI over queries (resampled per target)."""
    per_target = nlr(leakage_matrix(steered, base), targets, VALUES)
    rng = np.random.default_rng(seed)
    n = steered.shape[1]
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        boots.append(np.mean(nlr(leakage_matrix(steered[:, idx], base[:, idx]), targets, VALUES)))
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return per_target, (float(np.mean(per_target)), float(lo), float(hi))


def _mde_of(x: np.ndarray) -> float:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return mde(float(x.std(ddof=1) / np.sqrt(len(x)))) if len(x) > 1 else float("nan")


def analyse(records: Sequence[dict], targets: Sequence[str], controls: Sequence[dict] = (),
            judged_targets: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Tidy results, the per-method summary, paired tests (``tests``: :func:`~mechvalue.pipeline.comparisons.
    comparisons`), leakage matrices and NGLR tables from the raw records and the random controls' records.

    ``judged_targets`` (default: all): the targets whose judged metrics (control success, judged gain) count;
    the others' judge is near-constant on generations (:func:`mechvalue.evaluate.validity.judge_validity`).
    """
    targets = list(targets)
    judged = [k for k, t in enumerate(targets) if judged_targets is None or t in judged_targets]
    arms = [a for a in ARMS if all(any(r["arm"] == a and r["target"] == t for r in records) for t in targets)]
    if "base" not in arms:
        raise MechvalueError("the study needs the base arm for every target")
    by = {(r["arm"], r["target"]): r for r in records}
    base_j = judged_array(records, "base", targets)
    rows, summary, tables = [], [], {}
    for arm in arms:
        arm_j = judged_array(records, arm, targets)
        ti = [VALUES.index(t) for t in targets]
        csr = np.concatenate([(arm_j[k, :, ti[k]] > 0.5).astype(float) for k in judged] or [np.zeros(0)])
        gain = np.concatenate([arm_j[k, :, ti[k]] - base_j[k, :, ti[k]] for k in judged] or [np.zeros(0)])
        d_pref = np.concatenate([np.asarray(by[(arm, t)]["dilemma_pref"]) - np.asarray(by[("base", t)]["dilemma_pref"])
                                 for t in targets])
        win = np.concatenate([np.asarray(by[(arm, t)]["dilemma_win"]) for t in targets])
        ppl = np.concatenate([np.asarray(by[(arm, t)]["ppl"], float) for t in targets])
        ppl = ppl[np.isfinite(ppl)]
        texts = [x for t in targets for x in by[(arm, t)]["texts"]]
        row = {"method": arm}
        q_gain = [item_scores(by[(arm, t)], "questionnaire", t) for t in targets]
        q_base = [item_scores(by[("base", t)], "questionnaire", t) for t in targets]
        q_gain = (np.concatenate([a - b for a, b in zip(q_gain, q_base)]) if all(x is not None for x in q_gain)
                  else np.zeros(0))
        for name, x in (("control_success", csr), ("judged_gain", gain), ("dilemma_gain", d_pref),
                        ("questionnaire_gain", q_gain), ("dilemma_win", win), ("perplexity", ppl)):
            if name == "questionnaire_gain" and not len(x):
                continue
            est, lo, hi = bootstrap_ci(x) if len(x) else (np.nan, np.nan, np.nan)
            row.update({name: est, f"{name}_ci_low": lo, f"{name}_ci_high": hi})
            rows.append({"method": arm, "target": "all", "value": "target", "metric": name, "estimate": est,
                         "ci_low": lo, "ci_high": hi, "n": len(x),
                         "mde": _mde_of(x) if name.endswith("_gain") else np.nan})
        row["distinct_2"] = distinct_n(texts, 2) if any(t.strip() for t in texts) else np.nan
        if all("mmlu" in by[(arm, t)] for t in targets):
            acc = np.concatenate([np.asarray(by[(arm, t)]["mmlu"]) for t in targets])
            est, lo, hi = bootstrap_ci(acc)
            row.update({"mmlu": est, "mmlu_ci_low": lo, "mmlu_ci_high": hi})
            rows.append({"method": arm, "target": "all", "value": None, "metric": "mmlu", "estimate": est,
                         "ci_low": lo, "ci_high": hi, "n": len(acc)})
        if arm != "base":
            per_t, (m, lo, hi) = nlr_ci(arm_j, base_j, targets)
            row.update({"nlr": m, "nlr_ci_low": lo, "nlr_ci_high": hi})
            delta = leakage_matrix(arm_j, base_j)
            tables[f"leakage_{arm}"] = pd.DataFrame(delta, index=pd.Index(targets, name="target"), columns=VALUES)
            tables[f"nglr_target_group_{arm}"] = nglr_target_group(delta, targets, VALUES).rename_axis("target")
            tables[f"nglr_group_group_{arm}"] = nglr_group_group(delta, targets, VALUES).rename_axis("group")
            for k, t in enumerate(targets):
                for j, v in enumerate(VALUES):
                    est, lo, hi = paired_difference(arm_j[k, :, j], base_j[k, :, j])
                    rows.append({"method": arm, "target": t, "value": v, "metric": "judged_delta", "estimate": est,
                                 "ci_low": lo, "ci_high": hi, "n": arm_j.shape[1],
                                 "mde": _mde_of(arm_j[k, :, j] - base_j[k, :, j])})
                rows.append({"method": arm, "target": t, "value": t, "metric": "nlr", "estimate": float(per_t[k]),
                             "ci_low": np.nan, "ci_high": np.nan, "n": arm_j.shape[1]})
                est, lo, hi = paired_difference(by[(arm, t)]["dilemma_pref"], by[("base", t)]["dilemma_pref"])
                dd = np.asarray(by[(arm, t)]["dilemma_pref"]) - np.asarray(by[("base", t)]["dilemma_pref"])
                rows.append({"method": arm, "target": t, "value": t, "metric": "dilemma_delta", "estimate": est,
                             "ci_low": lo, "ci_high": hi, "n": len(dd), "mde": _mde_of(dd)})
        summary.append(row)
    radar = [{"method": arm, "value": t, "score": float(judged_array(records, arm, [t])[0, :, VALUES.index(t)].mean())}
             for arm in arms for t in targets]
    tests = comparisons(records, controls, targets, judged_targets=[targets[k] for k in judged])
    tested = tests.assign(metric=tests["metric"] + "_vs_" + tests["comparison"])
    tables["summary"] = pd.DataFrame(summary)
    tables["tests"] = tests
    tables["results"] = pd.concat([pd.DataFrame(rows), tested.drop(columns=["comparison", "se", "significant"])],
                                  ignore_index=True)
    tables["radar"] = pd.DataFrame(radar)
    return tables
