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

:func:`run_dual` runs it all, resumable, in one output folder.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import einops
import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from .._io import load_tensors, save_tensors, write_json_atomic
from ..collect import collect
from ..data import load_dilemmas, load_portraits, load_queries, load_system_prompts
from ..errors import CorruptFileError, MechvalueError
from ..evaluate import dilemma_preference, mmlu_accuracy, questionnaire
from ..generation import generate
from ..hooks import check_layers, resid_hook
from ..interventions import AddVector, ScaleNeurons
from ..metrics import RESULT_COLUMNS, bootstrap_ci, distinct_n, ead_n, paired_difference, results_frame
from ..models import model_info
from ..neurons import AngleClasses, NeuronSet, angle_class_table, angle_classes, matched_random
from ..prompts import chat
from ..values import VALUES, canonical_list, circle_coordinates, load_angles
from ..vectors import (
    SVDAxes,
    circumplex_fit,
    cosine_matrix,
    diff_in_means,
    mean_delta,
    pair_decomposition,
    procrustes_align,
    random_directions,
    svd_axes,
)

VECTOR_TYPES = ("intrinsic", "prompted", "intrinsic_perp", "prompted_perp")
CONTRASTS = ("within", "vs_intrinsic")
NORMALIZE = ("none", "unit", "unit_mean_norm")
#: extra columns of the steering rows, after :data:`mechvalue.metrics.RESULT_COLUMNS`
STEERING_EXTRAS = ("arm", "vector_type", "neuron_class", "alpha", "beta", "seed", "norm", "n_neurons", "ead_vocab",
                   "alpha_source")


@dataclass
class DualConfig:
    """All knobs of the pipeline (defaults sized for SmolLM2-135M on a CPU; see :meth:`quick`).

    ``layer`` (None: ``n_layers // 2``) is where neurons are classified and vectors steer;
    ``layers`` (None: all) where vectors are extracted. ``steer_values`` (None: every value of
    the run) are the preferred values for causal tests, then the run's other values; the first
    ``max_steer`` (None: all) with defined vectors are tested. ``alpha`` set skips the MMLU calibration over ``alphas``.
    ``top_frac`` is 5% rather than methods.md's 1%: 1% of SmolLM2's 1,536 neurons leaves 1-5 per class.
    """

    n_queries: int = 12
    max_new_tokens: int = 32
    temperature: float = 0.7
    batch_size: int = 32
    layers: tuple[int, ...] | None = None
    layer: int | None = None
    hook: str = "hook_resid_post"
    threshold: float | None = None
    contrast: str = "within"
    min_group: int = 2
    normalize_axes: bool = True
    top_frac: float = 0.05
    max_angle: float = 30.0
    signed: bool = True
    steer_values: tuple[str, ...] | None = ("benevolence", "achievement", "universalism", "power")
    max_steer: int | None = 1
    steer_normalize: str = "none"
    alphas: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    alpha: float | None = None
    max_mmlu_drop: float = 0.05
    n_mmlu: int = 20
    betas: tuple[float, ...] = (4.0,)
    n_random: int = 2
    n_items: int = 4
    n_dilemmas: int = 4
    n_diversity: int = 6
    diversity_tokens: int = 32
    n_permutations: int = 1000
    angles_path: str | None = None
    seed: int = 0

    def __post_init__(self):
        checks = [(self.n_queries >= 2, "n_queries must be >= 2"), (self.max_new_tokens >= 1, "max_new_tokens >= 1"),
                  (self.contrast in CONTRASTS, f"contrast must be one of {CONTRASTS}"),
                  (self.steer_normalize in NORMALIZE, f"steer_normalize must be one of {NORMALIZE}"),
                  (self.min_group >= 1, "min_group must be >= 1"),
                  (self.max_steer is None or self.max_steer >= 1, "max_steer must be None or >= 1"),
                  (len(self.alphas) > 0, "alphas is empty"),
                  (all(a > 0 for a in self.alphas), "alphas must be > 0"), (self.n_random >= 0, "n_random >= 0"),
                  (0 < self.max_mmlu_drop < 1, "max_mmlu_drop must be in (0, 1)"),
                  (self.n_items >= 1 and self.n_dilemmas >= 1, "n_items and n_dilemmas must be >= 1")]
        for ok, msg in checks:
            if not ok:
                raise MechvalueError(f"DualConfig: {msg}")

    @classmethod
    def quick(cls, **overrides) -> DualConfig:
        """A very small preset for smoke runs (about a minute of CPU on SmolLM2; no diversity generations)."""
        base = dict(n_queries=4, max_new_tokens=12, min_group=1, alphas=(4.0,), n_mmlu=4, n_random=1, n_items=2,
                    n_dilemmas=2, n_diversity=0, n_permutations=200)
        return cls(**{**base, **overrides})


# ------------------------------------------------------------------ small helpers

def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL cache; a torn last line (crash mid-append) is ignored."""
    if not path.exists():
        return []
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if k < len(lines) - 1:
                raise CorruptFileError(f"{path}:{k + 1}: invalid JSON ({exc.msg}); delete the file") from exc
    return rows


def _append_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and (data := path.read_bytes()) and not data.endswith(b"\n"):
        path.write_bytes(data[:data.rfind(b"\n") + 1])  # drop a torn last line before appending
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        f.flush()


def judge_name(judge) -> str:
    return str(getattr(judge, "name", type(judge).__name__))


def _seed(*parts) -> int:
    return zlib.crc32(json.dumps(parts).encode()) & 0x7FFFFFFF


# ------------------------------------------------------------------ 1. responses and labels

def plan_responses(values: Sequence[str], config: DualConfig, queries=None) -> list[dict]:
    """Rows to generate: the sampled queries intrinsic, then per value with a sampled system prompt."""
    queries = list(queries) if queries is not None else load_queries()
    pick = np.sort(np.random.default_rng(config.seed).permutation(len(queries))[:config.n_queries])
    qs = [queries[i] for i in pick]
    rows = [{"id": f"intrinsic|{q.id}", "condition": "intrinsic", "value": None, "query_id": q.id,
             "query": q.text, "system": None, "system_id": None} for q in qs]
    for v in canonical_list(values):
        prompts = load_system_prompts(v)
        rng = np.random.default_rng([config.seed, VALUES.index(v)])
        for q in qs:
            sp = prompts[int(rng.integers(len(prompts)))]
            rows.append({"id": f"prompted:{v}|{q.id}", "condition": "prompted", "value": v, "query_id": q.id,
                         "query": q.text, "system": sp.text, "system_id": sp.id})
    return rows


def generate_responses(model, plan: Sequence[dict], path: str | Path, *, config: DualConfig,
                       progress: bool = True) -> list[dict]:
    """Generate the planned rows not yet in ``path`` (JSONL, appended per batch); return all rows in plan order.

    The plan is cut into batches of ``config.batch_size`` rows (conditions mixed: fewer sequential
    decoding steps) with a seed per batch, so a resumed run produces the same texts as an
    uninterrupted one. Rows made with other generation settings are refused.
    """
    path = Path(path)
    info = model_info(model)
    settings = {"model_id": info.get("model_id"), "processing": info.get("processing"),
                "max_new_tokens": config.max_new_tokens, "temperature": config.temperature, "seed": config.seed}
    done = {r["id"]: r for r in _read_jsonl(path)}
    for r in done.values():
        if r.get("settings") != settings:
            raise CorruptFileError(f"{path}: response {r['id']!r} was generated with {r.get('settings')}, not "
                                   f"{settings}; use another output folder or delete the file")
    chunks = [list(plan[k:k + config.batch_size]) for k in range(0, len(plan), config.batch_size)]
    todo = [(k, ch) for k, ch in enumerate(chunks) if any(r["id"] not in done for r in ch)]
    for k, rows in tqdm(todo, desc="dual:generate", disable=not progress):
        gen = generate(model, [chat(r["query"], system=r["system"]) for r in rows],
                       max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                       seed=_seed(config.seed, k), batch_size=config.batch_size)
        new = [{**r, "response": t, "n_tokens": len(toks), "settings": settings}
               for r, t, toks in zip(rows, gen.texts, gen.tokens) if r["id"] not in done]
        _append_jsonl(path, new)
        done.update({r["id"]: r for r in new})
    return [done[r["id"]] for r in plan]


def label_responses(responses: Sequence[dict], judge, values: Sequence[str], path: str | Path, *,
                    threshold: float = 0.5) -> pd.DataFrame:
    """Judge scores (cached in ``path`` per judge name) and labels ``score >= threshold``.

    Intrinsic responses are labelled for every value, prompted ones for their own value; empty
    responses are skipped. Columns: id, condition, value, judge, score, label.
    """
    path, name = Path(path), judge_name(judge)
    have = {(r["id"], r["value"]): r for r in _read_jsonl(path) if r.get("judge") == name}
    kw = "questions" in inspect.signature(judge.judge).parameters
    for v in canonical_list(values):
        rows = [r for r in responses if r["response"].strip() and r["value"] in (None, v)
                and (r["id"], v) not in have]
        if not rows:
            continue
        texts = [r["response"] for r in rows]
        scores = judge.judge(texts, v, questions=[r["query"] for r in rows]) if kw else judge.judge(texts, v)
        scores = np.asarray(scores, dtype=float).reshape(-1)
        if scores.shape[0] != len(rows):
            raise MechvalueError(f"judge {name!r} returned {scores.shape[0]} scores for {len(rows)} texts")
        new = [{"id": r["id"], "condition": r["condition"], "value": v, "judge": name, "score": float(s)}
               for r, s in zip(rows, scores)]
        _append_jsonl(path, new)
        have.update({(r["id"], v): r for r in new})
    ids = {r["id"] for r in responses}
    df = pd.DataFrame([r for r in have.values() if r["id"] in ids and r["value"] in canonical_list(values)],
                      columns=["id", "condition", "value", "judge", "score"])
    df["label"] = (df["score"] >= threshold).astype(int)
    return df


# ------------------------------------------------------------------ 2. value vectors

@dataclass
class DualVectors:
    """Intrinsic and prompted value vectors ``[value, layer, d_model]`` and their orthogonalisations.

    ``meta``: model_id, processing, hook, judge, threshold, contrast, the group rule and sizes per
    (value, condition) and ``resid_norm`` (mean norm of a token-averaged response activation, per layer).
    NaN rows mark a value whose groups were empty.
    """

    values: list[str]
    layers: list[int]
    intrinsic: Float[Tensor, "value layer d_model"]
    prompted: Float[Tensor, "value layer d_model"]
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.intrinsic.shape != self.prompted.shape or self.intrinsic.shape[:2] != (len(self.values),
                                                                                      len(self.layers)):
            raise MechvalueError(f"DualVectors: tensors {tuple(self.intrinsic.shape)} / {tuple(self.prompted.shape)} "
                                 f"do not match {len(self.values)} values x {len(self.layers)} layers")
        self.pair = pair_decomposition(self.intrinsic, self.prompted)

    def stack(self, kind: str) -> Float[Tensor, "value layer d_model"]:
        table = {"intrinsic": self.intrinsic, "prompted": self.prompted, "intrinsic_perp": self.pair.intrinsic_perp,
                 "prompted_perp": self.pair.prompted_perp}
        if kind not in table:
            raise MechvalueError(f"vector type {kind!r} is not one of {VECTOR_TYPES}")
        return table[kind]

    def index(self, value: str, layer: int) -> tuple[int, int]:
        v = canonical_list([value])[0]
        if v not in self.values or layer not in self.layers:
            raise MechvalueError(f"no vectors for ({v}, layer {layer}); have {self.values} x layers {self.layers}")
        return self.values.index(v), self.layers.index(layer)

    def get(self, kind: str, value: str, layer: int) -> Float[Tensor, " d_model"]:
        return self.stack(kind)[self.index(value, layer)]

    def axes(self, value: str, layer: int, normalize: bool = True) -> SVDAxes:
        i, j = self.index(value, layer)
        if not (torch.isfinite(self.intrinsic[i, j]).all() and torch.isfinite(self.prompted[i, j]).all()):
            raise MechvalueError(f"{self.values[i]}: vectors are undefined (empty label groups); see meta['groups']")
        return svd_axes(self.intrinsic[i, j], self.prompted[i, j], normalize=normalize)

    def finite_values(self, layer: int) -> list[str]:
        j = self.layers.index(layer)
        ok = torch.isfinite(self.intrinsic[:, j]).all(-1) & torch.isfinite(self.prompted[:, j]).all(-1)
        ok &= (self.intrinsic[:, j].norm(dim=-1) > 0) & (self.prompted[:, j].norm(dim=-1) > 0)
        return [v for v, k in zip(self.values, ok.tolist()) if k]

    def cosines(self) -> pd.DataFrame:
        """Per (value, layer): cos(intrinsic, prompted) and the norm share each keeps when orthogonalised."""
        p = self.pair
        grid = [(v, layer) for v in self.values for layer in self.layers]
        return pd.DataFrame({"value": [g[0] for g in grid], "layer": [g[1] for g in grid],
                             "cos_intrinsic_prompted": p.cos.reshape(-1).numpy(),
                             "retained_norm_prompted_perp": p.retained_prompted.reshape(-1).numpy(),
                             "retained_norm_intrinsic_perp": p.retained_intrinsic.reshape(-1).numpy()})

    def check_model(self, model) -> None:
        info = model_info(model)
        for key in ("model_id", "processing"):
            if self.meta.get(key) != info.get(key):
                raise CorruptFileError(f"vectors were extracted with {key}={self.meta.get(key)!r}, but the model "
                                       f"has {key}={info.get(key)!r}; re-extract them for this model")

    def save(self, path: str | Path) -> Path:
        return save_tensors(path, {k: self.stack(k) for k in VECTOR_TYPES},
                            {**self.meta, "kind": "DualVectors", "values": self.values, "layers": self.layers})

    @classmethod
    def load(cls, path: str | Path, model=None) -> DualVectors:
        t, meta = load_tensors(path, kind="DualVectors")
        try:
            out = cls(list(meta["values"]), list(meta["layers"]), t["intrinsic"], t["prompted"],
                      {k: v for k, v in meta.items() if k not in ("kind", "values", "layers")})
        except KeyError as exc:
            raise CorruptFileError(f"{path}: DualVectors file lacks {exc}") from exc
        if model is not None:
            out.check_model(model)
        return out


def response_features(model, responses: Sequence[dict], layers: Sequence[int], *, hook: str = "hook_resid_post",
                      batch_size: int = 16, progress: bool = True) -> Float[Tensor, "n layer d_model"]:
    """Token-averaged activations over each response's tokens (conversation as context), per layer."""
    examples = [chat(r["query"], system=r["system"], response=r["response"]) for r in responses]
    hooks = {resid_hook(layer, hook): "mean" for layer in layers}
    stats = collect(model, examples, span="response", resid=False, mlp=False, features=hooks, batch_size=batch_size,
                    progress=progress, desc="dual:features")
    return torch.stack([stats.features[h] for h in hooks], dim=1)


def contrast_groups(responses: Sequence[dict], labels: pd.DataFrame, value: str, condition: str, *,
                    contrast: str = "within", min_group: int = 2) -> tuple[list[int], list[int], str]:
    """Row indices of the exp and unexp groups of one (value, condition) and the rule that chose them.

    Intrinsic: ``labels`` (intrinsic exp vs unexp), else ``score_split`` (judge score above vs at
    or below the median, or at-or-above vs below), else ``empty``. Prompted, ``contrast="within"``:
    ``labels`` (exp vs unexp of the value's prompted rows), else ``exp_vs_intrinsic_unexp``, else
    ``condition`` (all prompted vs all intrinsic rows, labels unused); ``"vs_intrinsic"`` starts
    at the second rule.
    """
    if contrast not in CONTRASTS:
        raise MechvalueError(f"contrast must be one of {CONTRASTS}, not {contrast!r}")
    pos = {r["id"]: k for k, r in enumerate(responses)}
    lab = labels[(labels.value == value) & labels.id.isin(list(pos))]
    intr, mine = lab[lab.condition == "intrinsic"], lab[lab.condition == "prompted"]  # prompted: value's own rows
    idx = lambda df: [pos[i] for i in df.id]  # noqa: E731
    big = lambda a, b: len(a) >= min_group and len(b) >= min_group  # noqa: E731
    if condition == "intrinsic":
        exp, unexp = idx(intr[intr.label == 1]), idx(intr[intr.label == 0])
        if big(exp, unexp):
            return exp, unexp, "labels"
        med = intr.score.median()
        s = intr.score
        for hi, lo in ((intr[s > med], intr[s <= med]), (intr[s >= med], intr[s < med])):
            if big(hi, lo):
                return idx(hi), idx(lo), "score_split"
        return [], [], "empty"
    if condition != "prompted":
        raise MechvalueError(f"condition must be 'intrinsic' or 'prompted', not {condition!r}")
    exp, unexp = idx(mine[mine.label == 1]), idx(mine[mine.label == 0])
    if contrast == "within" and big(exp, unexp):
        return exp, unexp, "labels"
    if big(exp, idx(intr[intr.label == 0])):
        return exp, idx(intr[intr.label == 0]), "exp_vs_intrinsic_unexp"
    if big(idx(mine), idx(intr)):
        return idx(mine), idx(intr), "condition"
    return [], [], "empty"


def value_vectors(features: Float[Tensor, "n layer d_model"], responses: Sequence[dict], labels: pd.DataFrame,
                  values: Sequence[str], layers: Sequence[int], *, contrast: str = "within", min_group: int = 2,
                  meta: dict | None = None) -> DualVectors:
    """Difference-in-means vectors per value, layer and condition from token-averaged response features."""
    f = torch.as_tensor(features).float()
    if f.ndim != 3 or f.shape[0] != len(responses) or f.shape[1] != len(layers):
        raise MechvalueError(f"features must be [{len(responses)} responses, {len(layers)} layers, d], "
                             f"got {tuple(f.shape)}")
    flat = einops.rearrange(f, "n l d -> n (l d)")
    out, groups = {"intrinsic": [], "prompted": []}, []
    for v in canonical_list(values):
        for cond in out:
            exp, unexp, rule = contrast_groups(responses, labels, v, cond, contrast=contrast, min_group=min_group)
            groups.append({"value": v, "condition": cond, "rule": rule, "n_exp": len(exp), "n_unexp": len(unexp)})
            vec = (diff_in_means(flat[exp], flat[unexp]) if rule != "empty"
                   else torch.full((flat.shape[1],), float("nan")))
            out[cond].append(einops.rearrange(vec, "(l d) -> l d", l=len(layers)))
    meta = {**(meta or {}), "contrast": contrast, "min_group": min_group, "groups": groups,
            "resid_norm": f.norm(dim=-1).mean(0).tolist(), "n_responses": len(responses)}
    return DualVectors(canonical_list(values), list(layers), torch.stack(out["intrinsic"]),
                       torch.stack(out["prompted"]), meta)


# ------------------------------------------------------------------ 3-4. axes and neuron classes

def dual_axes(vectors: DualVectors, *, normalize: bool = True) -> tuple[Float[Tensor, "value layer d_model"],
                                                                        Float[Tensor, "value layer d_model"]]:
    """Shared axis ``u_shared`` and intrinsic-unique axis ``u_int`` (``u_prompt = -u_int``) per value and layer."""
    shared, unique = torch.full_like(vectors.intrinsic, float("nan")), torch.full_like(vectors.intrinsic, float("nan"))
    for j, layer in enumerate(vectors.layers):
        for v in vectors.finite_values(layer):
            ax = vectors.axes(v, layer, normalize=normalize)
            shared[vectors.values.index(v), j], unique[vectors.values.index(v), j] = ax.shared, ax.intrinsic
    return shared, unique


def neuron_classes(model, vectors: DualVectors, *, layer: int | None = None, values: Sequence[str] | None = None,
                   top_frac: float = 0.01, max_angle: float = 30.0, signed: bool = True,
                   normalize: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Classify ``W_out[layer]`` rows per value (shared / intrinsic / prompted / unassigned among the top
    ``top_frac`` by projection norm). Returns (kept neurons, counts per value). Refuses vectors of another
    model or weight processing (``W_out`` directions change with processing)."""
    info = model_info(model)
    if vectors.meta.get("processing") != info.get("processing"):
        raise MechvalueError(f"vectors were extracted with weight processing {vectors.meta.get('processing')!r} "
                             f"but the model has {info.get('processing')!r}; W_out rows and residual directions "
                             "are not comparable: re-extract the vectors on this model")
    vectors.check_model(model)
    layer = model.cfg.n_layers // 2 if layer is None else check_layers(model, layer)[0]
    w_out = model.W_out[layer].detach().float().cpu()
    frames, counts = [], []
    for v in canonical_list(values if values is not None else vectors.values):
        if v not in vectors.finite_values(layer):
            continue
        cls = angle_classes(w_out, vectors.axes(v, layer, normalize), top_frac=top_frac, max_angle=max_angle,
                            signed=signed)
        frames.append(angle_class_table(cls, value=v, layer=layer))
        counts.append({"value": v, "layer": layer, **cls.counts(),
                       "unassigned": int((cls.kept & (cls.label < 0)).sum()), "kept": int(cls.kept.sum())})
    cols = ["value", "layer", "neuron", "class", "angle", "proj_norm", "x", "y"]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    return df, pd.DataFrame(counts, columns=["value", "layer", *AngleClasses.NAMES, "unassigned", "kept"])


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
    rand = random_directions(vecs["prompted"], config.n_random, seed=_seed(config.seed, value, "random"))
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
                rnd = matched_random(as_set(idx), model.cfg.d_mlp, seed=_seed(config.seed, value, c, s), exclude=kept)
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
              seed=_seed(config.seed, "diversity"), batch_size=config.batch_size)
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


# ------------------------------------------------------------------ 6. structure

def _cos_frame(x: Tensor, values: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(cosine_matrix(x).numpy(), columns=values)
    df.insert(0, "value", values)
    return df


def structure(vectors: DualVectors, layer: int, *, normalize: bool = True, angles: dict[str, float] | None = None,
              n_permutations: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict]:
    """Mean delta direction and its explained share, circumplex fit of the shared axes, cosine matrices.

    Returns (circumplex coordinates: value, x, y, theory_x, theory_y with x, y the Procrustes-aligned
    PCA of the shared axes; cosine matrices of the ``shared`` axes and the ``intrinsic`` and
    ``prompted`` vectors in circumplex order; a summary dict).
    """
    if layer not in vectors.layers:
        raise MechvalueError(f"layer {layer} not in the vectors' layers {vectors.layers}")
    vals = [v for v in VALUES if v in vectors.finite_values(layer)]
    idx, j = [vectors.values.index(v) for v in vals], vectors.layers.index(layer)
    info: dict = {"layer": layer, "values": vals, "n_values": len(vals), "normalize_axes": normalize}
    if len(vals) < 2:
        info["skipped"] = "fewer than 2 values with defined vectors"
        return pd.DataFrame(columns=["value", "x", "y", "theory_x", "theory_y"]), {}, info
    deltas = vectors.prompted[idx] - vectors.intrinsic[idx]  # [value, layer, d]
    m, share = mean_delta(deltas[:, j])
    info.update(delta_share=share, delta_share_chance=1 / len(vals), delta_norm=float(m.norm()),
                delta_share_by_layer={int(lay): mean_delta(deltas[:, k])[1] for k, lay in enumerate(vectors.layers)})
    shared = torch.stack([vectors.axes(v, layer, normalize).shared for v in vals])
    mats = {"shared": _cos_frame(shared, vals), "intrinsic": _cos_frame(vectors.intrinsic[idx, j], vals),
            "prompted": _cos_frame(vectors.prompted[idx, j], vals)}
    target = np.array(circle_coordinates(angles))[[VALUES.index(v) for v in vals]]
    circ = pd.DataFrame({"value": vals, "x": np.nan, "y": np.nan, "theory_x": target[:, 0], "theory_y": target[:, 1]})
    if len(vals) >= 3:
        fit = circumplex_fit(shared, target, n_permutations=n_permutations, seed=seed)
        circ[["x", "y"]] = procrustes_align(fit["pca_xy"], target)
        info.update(r2=fit["r2"], p_value=fit["p_value"], null_mean=fit["null_mean"],
                    pca_explained_variance=fit["explained_variance"], n_permutations=n_permutations)
    else:
        info["circumplex"] = "skipped: fewer than 3 values"
    return circ, mats, info


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


def _mmlu_questions(mmlu, n: int, seed: int) -> list:
    if mmlu is None or n <= 0:
        return []
    if isinstance(mmlu, str | Path):
        from ..public_data import load_mmlu

        mmlu = load_mmlu(mmlu)
    return _subset(list(mmlu), n, seed)


def _steering(model, vectors, classes, values, layer, config, mmlu, out: Path, vec_fp: str, used_queries: set[str],
              progress: bool):
    prefer = canonical_list(config.steer_values) if config.steer_values is not None else list(values)
    steer = [v for v in dict.fromkeys([*prefer, *values])
             if v in values and v in vectors.finite_values(layer)][:config.max_steer]
    if not steer:
        return pd.DataFrame(columns=[*RESULT_COLUMNS, *STEERING_EXTRAS]), pd.DataFrame()
    questions = _mmlu_questions(mmlu, config.n_mmlu, config.seed)
    cal_fp = _fingerprint([vec_fp, layer, steer, config.steer_normalize, config.alphas, config.alpha,
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
        fp = _fingerprint([cal_fp, alpha, knobs, div, classes[classes.value == v].to_dict("records")])
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
        from ..judges import LexiconJudge

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
    vec_fp = _fingerprint([[(r["id"], r["response"]) for r in used], labels.sort_values(["id", "value"]).to_dict(
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
                 "groups": pd.DataFrame(vectors.meta["groups"]), "cosines": vectors.cosines()}
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
    res["steering"], res["calibration"] = _steering(model, vectors, res["neuron_classes"], values, layer, config,
                                                    mmlu, out, vec_fp, {r["query_id"] for r in responses},
                                                    progress)
    tick("steering")
    res["structure"].update(alpha=float(res["steering"].alpha.dropna().iloc[0]) if len(res["steering"]) else None,
                            judge=judge_name(judge), threshold=threshold, seconds=seconds, **model_meta)
    for name in ("groups", "cosines", "neuron_classes", "class_counts", "steering", "calibration", "circumplex",
                 "cosine_matrix"):
        res[name].to_csv(out / f"{name}.csv", index=False)
    for kind in ("intrinsic", "prompted"):
        if kind in mats:
            mats[kind].to_csv(out / f"cosine_matrix_{kind}.csv", index=False)
    write_json_atomic(out / "structure.json", res["structure"])
    return res
