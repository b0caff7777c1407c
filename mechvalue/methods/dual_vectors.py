"""Dual mechanisms, parts 2-3 and 6: value vectors, axes, neuron classes and structure (methods.md §5.3-5.9).

Difference-in-means vectors of token-averaged response activations (:class:`DualVectors`),
SVD shared/unique axes, ``W_out`` angle classes, and the structure analyses (mean delta,
circumplex, cosine matrices). Re-exported by :mod:`mechvalue.methods.dual`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import einops
import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from mechvalue.analysis.neurons import AngleClasses, angle_class_table, angle_classes
from mechvalue.analysis.vectors import (
    SVDAxes,
    circumplex_fit,
    cosine_matrix,
    diff_in_means,
    mean_delta,
    pair_decomposition,
    procrustes_align,
    svd_axes,
)
from mechvalue.core.artifacts import load_tensors, save_tensors
from mechvalue.core.errors import CorruptFileError, MechvalueError
from mechvalue.core.hooks import check_layers, resid_hook
from mechvalue.core.values import VALUES, canonical_list, circle_coordinates
from mechvalue.lm.collect import collect
from mechvalue.lm.models import model_info
from mechvalue.lm.prompts import chat
from mechvalue.methods.dual_responses import CONTRASTS, VECTOR_TYPES

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
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int) or n_permutations < 1:
        raise MechvalueError(f"structure: n_permutations must be an integer >= 1, got {n_permutations!r}")
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
