"""Pure math on MLP neurons (no model calls): selection, sets, angle classes, matched controls.

A neuron ``(l, i)`` is hidden unit ``i`` of block ``l``'s MLP; editing it means editing
``blocks.{l}.mlp.hook_post[..., i]``, which scales its ``W_out[l][i]`` contribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechvalue.analysis.checks import count, fail, finite, matrix
from mechvalue.analysis.vectors import SVDAxes
from mechvalue.core.artifacts import load_tensors, save_tensors
from mechvalue.core.errors import CorruptFileError, MechvalueError


@dataclass
class NeuronSet:
    """A set of neurons with a score and a sign each.

    Attributes:
        layers, indices: ``[n]`` block index and neuron index of each member.
        scores: ``[n]`` the selection score (delta, probe weight, projection norm...).
        signs: ``[n]`` +1/-1 (side or probe sign).
        name: a label such as ``"self_transcendence"``; meta: provenance (model, rule, tau...).
    """

    layers: Int[Tensor, " n"]
    indices: Int[Tensor, " n"]
    scores: Float[Tensor, " n"]
    signs: Int[Tensor, " n"]
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        fields = {k: getattr(self, k) for k in ("layers", "indices", "scores", "signs")}
        shapes = {k: tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__ for k, v in fields.items()}
        if any(not isinstance(v, Tensor) or v.ndim != 1 for v in fields.values()) or len(set(shapes.values())) != 1:
            raise fail("NeuronSet", f"layers, indices, scores and signs must be 1-D tensors of one length [n], got "
                                    f"{shapes}")

    def __len__(self) -> int:
        return int(self.layers.shape[0])

    def keys(self) -> set[tuple[int, int]]:
        return set(zip(self.layers.tolist(), self.indices.tolist()))

    def by_layer(self) -> dict[int, Int[Tensor, " k"]]:
        """Layer -> neuron indices (sorted)."""
        return {int(lay): self.indices[self.layers == lay].sort().values for lay in self.layers.unique()}

    def counts_per_layer(self, n_layers: int) -> Int[Tensor, " layer"]:
        need = int(self.layers.max()) + 1 if len(self) else 0
        if count(n_layers, "n_layers", "NeuronSet.counts_per_layer") < need:
            raise fail("NeuronSet.counts_per_layer", f"n_layers={n_layers} but the set has neurons in layer {need - 1}")
        return torch.bincount(self.layers, minlength=n_layers)

    def fraction(self, n_layers: int, d_mlp: int) -> float:
        """Share of all MLP neurons in the set."""
        where = "NeuronSet.fraction"
        return len(self) / (count(n_layers, "n_layers", where) * count(d_mlp, "d_mlp", where))

    def jaccard(self, other: NeuronSet) -> float:
        a, b = self.keys(), other.keys()
        return len(a & b) / len(a | b) if a | b else float("nan")

    def save(self, path: str | Path) -> Path:
        return save_tensors(path, {"layers": self.layers, "indices": self.indices, "scores": self.scores,
                                   "signs": self.signs}, {"kind": "NeuronSet", "name": self.name, **self.meta})

    @classmethod
    def load(cls, path: str | Path) -> NeuronSet:
        t, meta = load_tensors(path, kind="NeuronSet")
        try:
            return cls(t["layers"], t["indices"], t["scores"], t["signs"], meta.get("name", ""),
                       {k: v for k, v in meta.items() if k not in ("kind", "name")})
        except KeyError as exc:
            raise CorruptFileError(f"{path}: NeuronSet lacks tensor {exc}") from exc

    @classmethod
    def from_mask(cls, mask: Tensor, scores: Tensor, layers: Sequence[int], name: str = "", **meta) -> NeuronSet:
        """Members where ``mask[layer_pos, i]``; ``layers`` maps the first axis to block indices."""
        if mask.ndim != 2 or mask.shape != scores.shape:
            raise fail("NeuronSet.from_mask", f"mask {tuple(mask.shape)} and scores {tuple(scores.shape)} must be "
                                              "[layer, d_mlp] tables of one shape")
        _check_layers(layers, mask.shape[0], "NeuronSet.from_mask")
        lp, idx = mask.nonzero(as_tuple=True)
        lay = torch.as_tensor(list(layers), dtype=torch.long)[lp]
        s = scores[lp, idx].float()
        return cls(lay, idx, s, torch.where(s >= 0, 1, -1), name, dict(meta))


def _check_layers(layers: Sequence[int], rows: int, where: str) -> None:
    if len(layers) != rows:
        raise fail(where, f"layers has {len(layers)} entries ({list(layers)[:8]}) but the table has {rows} rows; "
                          "expected one block index per row")


def activation_prob_delta(p_a: Float[Tensor, "layer d_mlp"], p_b: Float[Tensor, "layer d_mlp"]
                          ) -> Float[Tensor, "layer d_mlp"]:
    """ValueLocate's ``delta = p_A - p_B`` of activation probabilities."""
    p_a, p_b = matrix(p_a, "p_a", "activation_prob_delta"), matrix(p_b, "p_b", "activation_prob_delta")
    if p_a.shape != p_b.shape:
        raise MechvalueError(f"activation-probability tables differ in shape: {tuple(p_a.shape)} vs {tuple(p_b.shape)}")
    return p_a - p_b


def threshold_sets(delta: Float[Tensor, "layer d_mlp"], tau: float, layers: Sequence[int], names=("A", "B"),
                   **meta) -> tuple[NeuronSet, NeuronSet]:
    """``N_A = {delta > tau}``, ``N_B = {delta < -tau}`` (disjoint by construction)."""
    if not 0 <= tau < 1:
        raise MechvalueError(f"tau must be in [0, 1), got {tau}")
    delta = matrix(delta, "delta", "threshold_sets")
    _check_layers(layers, delta.shape[0], "threshold_sets")
    if isinstance(names, str) or len(names) != 2:
        raise fail("threshold_sets", f"names must be two set names (A, B), got {names!r}")
    a = NeuronSet.from_mask(delta > tau, delta, layers, names[0], tau=tau, **meta)
    b = NeuronSet.from_mask(delta < -tau, delta, layers, names[1], tau=tau, **meta)
    return a, b


def top_k(score: Float[Tensor, "layer d_mlp"], k: int, layers: Sequence[int], name: str = "", *,
          largest: bool = True, **meta) -> NeuronSet:
    """The ``k`` neurons with the largest (or smallest) ``score`` over all layers."""
    score = matrix(score, "score", "top_k")
    _check_layers(layers, score.shape[0], "top_k")
    flat = score.reshape(-1)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 <= k <= flat.numel():
        raise MechvalueError(f"top_k: k={k!r} must be an integer in 0..{flat.numel()} (the score table's size)")
    top = flat.topk(k, largest=largest).indices
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[top] = True
    return NeuronSet.from_mask(mask.reshape(score.shape), score, layers, name, **meta)


def matched_random(reference: NeuronSet, d_mlp: int, *, seed: int = 0, exclude: NeuronSet | None = None,
                   name: str | None = None) -> NeuronSet:
    """Random neurons with the same per-layer counts as ``reference`` (optionally avoiding ``exclude``)."""
    for arg, name in ((reference, "reference"), (exclude, "exclude")):
        if not isinstance(arg, NeuronSet) and not (name == "exclude" and arg is None):
            raise fail("matched_random", f"{name} must be a NeuronSet, got {type(arg).__name__}")
    count(d_mlp, "d_mlp", "matched_random")
    if len(reference) and int(reference.indices.max()) >= d_mlp:
        raise fail("matched_random", f"reference has neuron index {int(reference.indices.max())} but d_mlp={d_mlp}; "
                                     "pass the d_mlp of the model the set belongs to")
    g = torch.Generator().manual_seed(seed)
    banned = exclude.keys() if exclude is not None else set()
    lay_out, idx_out = [], []
    for layer, idx in reference.by_layer().items():
        pool = torch.tensor([i for i in range(d_mlp) if (layer, i) not in banned])
        if len(pool) < len(idx):
            raise MechvalueError(f"layer {layer}: cannot draw {len(idx)} random neurons from {len(pool)}")
        pick = pool[torch.randperm(len(pool), generator=g)[:len(idx)]]
        lay_out.append(torch.full((len(idx),), layer))
        idx_out.append(pick.sort().values)
    lays = torch.cat(lay_out) if lay_out else torch.zeros(0, dtype=torch.long)
    idxs = torch.cat(idx_out) if idx_out else torch.zeros(0, dtype=torch.long)
    return NeuronSet(lays, idxs, torch.zeros(len(lays)), torch.ones(len(lays), dtype=torch.long),
                     name or f"random[{reference.name}]#{seed}", {"control": "matched_random", "seed": seed})


def jaccard_matrix(sets: Sequence[NeuronSet]) -> Float[np.ndarray, "n n"]:
    return np.array([[a.jaccard(b) for b in sets] for a in sets])


@dataclass
class AngleClasses:
    """Neuron classes of one layer by the angle of ``W_out`` rows to the shared/unique axes.

    Attributes:
        coords: ``[d_mlp, 2]`` coordinates of each row in the (shared, intrinsic) basis.
        norm: ``[d_mlp]`` projection norm; kept: ``[d_mlp]`` bool, top-k% by norm.
        angles: ``[d_mlp, 3]`` degrees to (shared, intrinsic, prompted) anchors.
        label: ``[d_mlp]`` 0 shared, 1 intrinsic-unique, 2 prompted-unique, -1 unassigned / not kept.
    """

    coords: Float[Tensor, "d_mlp 2"]
    norm: Float[Tensor, " d_mlp"]
    kept: Tensor
    angles: Float[Tensor, "d_mlp 3"]
    label: Int[Tensor, " d_mlp"]
    NAMES = ("shared", "intrinsic", "prompted")

    def members(self, name: str) -> Int[Tensor, " k"]:
        if name not in self.NAMES:
            raise MechvalueError(f"class {name!r} is not one of {self.NAMES}")
        return (self.label == self.NAMES.index(name)).nonzero().reshape(-1)

    def counts(self) -> dict[str, int]:
        return {n: int((self.label == k).sum()) for k, n in enumerate(self.NAMES)}


def angle_classes(w_out: Float[Tensor, "d_mlp d_model"], axes: SVDAxes, *, top_frac: float = 0.01,
                  max_angle: float = 30.0, signed: bool = True) -> AngleClasses:
    """Classify ``W_out`` rows as shared / intrinsic-unique / prompted-unique (methods.md §5.7).

    Each row is projected on the plane ``B = [u_shared, u_int]``; the top ``top_frac`` rows
    by projection norm are kept and labelled by the anchor at the smallest angle if it is
    below ``max_angle`` degrees. ``signed=False`` uses |cos| (a row along -u counts as u:
    SwiGLU activations can be negative); the two unique anchors are then one axis and such
    neurons are labelled ``intrinsic`` (read: unique).
    """
    if not isinstance(axes, SVDAxes):
        raise fail("angle_classes", f"axes must be an SVDAxes (from svd_axes), got {type(axes).__name__}")
    finite(axes.basis, "axes", "angle_classes")
    w = matrix(w_out, "w_out", "angle_classes")
    if w.shape[1] != axes.shared.shape[0]:
        raise MechvalueError(f"W_out must be [d_mlp, {axes.shared.shape[0]}], got {tuple(w.shape)}")
    if not 0 < top_frac <= 1:
        raise MechvalueError(f"top_frac must be in (0, 1], got {top_frac}")
    if not 0 < max_angle <= 180:
        raise MechvalueError(f"max_angle must be in (0, 180], got {max_angle}")
    coords = w @ axes.basis  # [d_mlp, 2]
    norm = coords.norm(dim=1)
    k = max(1, int(round(top_frac * w.shape[0])))
    kept = torch.zeros(w.shape[0], dtype=torch.bool)
    kept[norm.topk(k).indices] = True
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # shared, intrinsic, prompted in the basis
    cos = (coords @ anchors.T) / norm.clamp_min(1e-12)[:, None]
    if not signed:
        cos = cos.abs()
    angles = torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))
    best, which = angles.min(dim=1)
    label = torch.where(kept & (best < max_angle), which, torch.full_like(which, -1))
    return AngleClasses(coords, norm, kept, angles, label)


def angle_class_table(classes: AngleClasses, **columns):
    """The kept neurons of ``classes`` as a DataFrame: ``**columns`` (e.g. value=, layer=), then neuron,
    class (a name of :attr:`AngleClasses.NAMES` or ``"unassigned"``), angle (degrees to its class's
    anchor; to the nearest anchor when unassigned), proj_norm and the plane coordinates x (shared), y (intrinsic)."""
    import pandas as pd

    kept = classes.kept.nonzero().reshape(-1)
    lab, ang = classes.label[kept], classes.angles[kept]
    angle = torch.where(lab >= 0, ang.gather(1, lab.clamp(min=0)[:, None])[:, 0], ang.min(1).values)
    names = np.array([*AngleClasses.NAMES, "unassigned"])
    return pd.DataFrame({**columns, "neuron": kept.numpy(), "class": names[lab.numpy()], "angle": angle.numpy(),
                         "proj_norm": classes.norm[kept].numpy(), "x": classes.coords[kept, 0].numpy(),
                         "y": classes.coords[kept, 1].numpy()})


def top_class_neurons(table, cls: str, k: int, value: str | None = None) -> list[tuple[int, int]]:
    """The ``k`` neurons of class ``cls`` (``shared``/``intrinsic``/``prompted``) with the largest ``proj_norm``.

    ``table`` is the dual step's ``neuron_classes.csv`` as a DataFrame (columns value, layer, neuron, class,
    proj_norm), optionally restricted to one ``value``; a neuron classed for several values counts once.
    """
    rows = table[(table["class"] == cls) & ((table["value"] == value) if value else True)]
    rows = rows.sort_values("proj_norm", ascending=False, kind="stable")
    return list(dict.fromkeys(zip(rows["layer"].astype(int), rows["neuron"].astype(int))))[:k]

