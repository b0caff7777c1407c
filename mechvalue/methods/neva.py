"""NeVA (Yang et al., arXiv 2602.07356): value-specific sparse neuron probes and
context-aware neuron edits. RECONSTRUCTED: the paper's equations were not recoverable;
this follows the design of methods.md §4.5-4.6, written to be swapped for the exact form.

1. Features: ``blocks.{l}.mlp.hook_post`` at the last token (or span mean) of the bundled
   contrastive pairs at candidate layers (default: the middle half of the layers).
2. One sparse (L1) logistic probe per value and layer on standardized features; the
   standardization is stored with the probe.
3. Specificity ``s_v = |w_v| - lam * max_{u != v} |w_u|`` penalises neurons that also load
   on other values' probes; the top-K by ``s_v`` over all candidate layers form ``S_v``
   (default K = 0.1% of candidate neurons) with signs ``sign(w_v)``.
4. Edit (per position and per row, optionally gated): for each layer holding neurons of
   ``S_v``, a probe refit on those neurons only defines ``z = w.x~ + b``; the minimal L2
   edit of those neurons bringing ``z`` to ``logit(P0)`` (:class:`ProbePush`), or the
   ``sign_push`` rule (raise positive-weight neurons to their positive-class mean, lower
   negative-weight ones to their negative-class mean).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from mechvalue.analysis.neurons import NeuronSet
from mechvalue.analysis.vectors import train_probe
from mechvalue.core.errors import MechvalueError
from mechvalue.core.hooks import mlp_hook
from mechvalue.core.values import canonical_list
from mechvalue.data.bundled import load_pairs
from mechvalue.interventions.install import Lambda, ProbePush
from mechvalue.lm.collect import collect
from mechvalue.lm.prompts import raw


@dataclass
class NeuronProbes:
    """Per-value, per-layer neuron features and sparse probe weights (standardized space).

    Attributes:
        layers: candidate layers; weights[v]: ``[layer, d_mlp]``; accuracy[v]: ``[layer]``.
        mean, scale: ``[layer, d_mlp]`` feature standardization; pos_mean/neg_mean[v]: class means.
        features / labels: train features per value, kept to refit restricted probes.
    """

    layers: list[int]
    weights: dict[str, Tensor]
    accuracy: dict[str, Tensor]
    mean: Tensor
    scale: Tensor
    pos_mean: dict[str, Tensor]
    neg_mean: dict[str, Tensor]
    features: dict[str, Tensor] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def default_layers(n_layers: int) -> list[int]:
    """The middle half of the layers."""
    return list(range(n_layers // 4, n_layers - n_layers // 4))


def train_neuron_probes(model, values: Sequence[str] | None = None, *, layers: Sequence[int] | None = None,
                        reduce: str = "last", C: float = 0.05, batch_size: int = 16, seed: int = 0,
                        progress: bool = True) -> NeuronProbes:
    """Sparse logistic probes on ``hook_post`` per value and candidate layer, from the bundled pairs."""
    values = canonical_list(values)
    layers = list(layers) if layers is not None else default_layers(model.cfg.n_layers)
    hooks = {mlp_hook(layer): reduce for layer in layers}
    texts, owner, label, split = [], [], [], []
    for v in values:
        for p in load_pairs(v):
            for text, y in ((p.positive, 1), (p.negative, 0)):
                texts.append(text)
                owner.append(v)
                label.append(y)
                split.append(p.split)
    st = collect(model, [raw(t) for t in texts], layers=layers, span="all" if reduce == "mean" else "last",
                 resid=False, mlp=False, features=hooks, batch_size=batch_size, desc="neva:features",
                 progress=progress, max_length=256)
    feats = torch.stack([st.features[mlp_hook(layer)] for layer in layers])  # [layer, n, d_mlp]
    probes = fit_neuron_probes(feats, owner, label, split, layers, C=C, seed=seed)
    probes.meta["reduce"] = reduce
    return probes


def fit_neuron_probes(feats: Tensor, owner: Sequence[str], label: Sequence[int], split: Sequence[str],
                      layers: Sequence[int], *, C: float = 0.05, seed: int = 0) -> NeuronProbes:
    """Fit the per-value, per-layer L1 probes on features ``[layer, n, d_mlp]`` (pure; no model).

    ``owner[i]`` is the value of row i's pair, ``label[i]`` 1 for its positive, ``split[i]`` train/test.
    """
    owner_a, label_a, split_a = np.asarray(owner), np.asarray(label, dtype=int), np.asarray(split)
    if feats.ndim != 3 or feats.shape[0] != len(layers) or feats.shape[1] != len(owner_a):
        raise MechvalueError(f"features must be [{len(layers)} layers, {len(owner_a)} rows, d_mlp], "
                             f"got {tuple(feats.shape)}")
    train_all = split_a == "train"
    mean = feats[:, train_all].mean(1)
    scale = feats[:, train_all].std(1) + 1e-6
    weights, accuracy, pos_mean, neg_mean, kept, labels = {}, {}, {}, {}, {}, {}
    for v in dict.fromkeys(owner_a.tolist()):
        tr = (owner_a == v) & train_all
        te = (owner_a == v) & ~train_all
        w_rows, accs = [], []
        for k in range(len(layers)):
            z = (feats[k] - mean[k]) / scale[k]
            probe = train_probe(z[tr], label_a[tr], x_test=z[te] if te.any() else None,
                                y_test=label_a[te] if te.any() else None, C=C, penalty="l1",
                                standardize=False, seed=seed)
            w_rows.append(probe.w)
            accs.append(probe.accuracy)
        weights[v], accuracy[v] = torch.stack(w_rows), torch.tensor(accs)
        pos_mean[v] = feats[:, tr & (label_a == 1)].mean(1)
        neg_mean[v] = feats[:, tr & (label_a == 0)].mean(1)
        kept[v], labels[v] = feats[:, tr], label_a[tr]
    return NeuronProbes(list(layers), weights, accuracy, mean, scale, pos_mean, neg_mean, kept, labels,
                        {"C": C, "seed": seed})


def specificity(weights: dict[str, Tensor], lam: float = 0.5) -> dict[str, Tensor]:
    """``s_v = |w_v| - lam * max_{u != v} |w_u|`` elementwise (``[layer, d_mlp]`` each)."""
    if len(weights) < 2 or lam == 0:
        return {v: w.abs() for v, w in weights.items()}
    stacked = torch.stack([w.abs() for w in weights.values()])
    out = {}
    for k, v in enumerate(weights):
        others = torch.cat([stacked[:k], stacked[k + 1:]])
        out[v] = stacked[k] - lam * others.max(0).values
    return out


def select_neurons(probes: NeuronProbes, *, budget: float | int = 0.001, lam: float = 0.5) -> dict[str, NeuronSet]:
    """The sparse set per value: top-K neurons by specificity among non-zero probe weights.

    ``budget``: a fraction of candidate neurons (< 1) or a count; at least one neuron.
    """
    spec = specificity(probes.weights, lam)
    n_cand = len(probes.layers) * probes.mean.shape[1]
    k = int(budget) if budget >= 1 else max(1, int(round(budget * n_cand)))
    out = {}
    for v, s in spec.items():
        w = probes.weights[v]
        s = torch.where(w != 0, s, torch.full_like(s, -float("inf")))
        flat = s.reshape(-1)
        kk = min(k, int(torch.isfinite(flat).sum()))
        if kk == 0:  # an empty set (its edit is a no-op), flagged rather than stopping the other values
            warnings.warn(f"NeVA: the L1 probes of {v} kept no neuron; raise C", stacklevel=2)
            empty = torch.zeros(0, dtype=torch.long)
            out[v] = NeuronSet(empty, empty, torch.zeros(0), empty, v, {"budget": k, "lam": lam,
                                                                        "rule": "neva_specificity", "empty": True})
            continue
        top = flat.topk(kk).indices
        lp, idx = top // s.shape[1], top % s.shape[1]
        lay = torch.tensor(probes.layers)[lp]
        wv = w[lp, idx]
        out[v] = NeuronSet(lay, idx, flat[top], torch.where(wv >= 0, 1, -1), v,
                           {"budget": k, "lam": lam, "rule": "neva_specificity"})
    return out


def edit_specs(probes: NeuronProbes, neurons: NeuronSet, *, p0: float = 0.9, rule: str = "probe_push",
               gate=None, positions: str = "all", C: float = 1.0) -> list:
    """Context-aware edit of ``neurons`` toward ``neurons.name``'s value, one spec per layer.

    ``probe_push``: minimal L2 edit of the layer's selected neurons bringing a probe refit on
    them to ``P0`` (only where it is below, per position and row); ``sign_push``: clamp
    toward the class means.
    """
    if not 0 < p0 < 1:
        raise MechvalueError(f"P0 must be in (0, 1), got {p0}")
    v = neurons.name
    if v not in probes.weights:
        raise MechvalueError(f"no probes for {v!r}")
    specs = []
    target = float(np.log(p0 / (1 - p0)))
    for layer, idx in neurons.by_layer().items():
        k = probes.layers.index(layer)
        mu, sd = probes.mean[k, idx], probes.scale[k, idx]
        if rule == "probe_push":
            x = (probes.features[v][k][:, idx] - mu) / sd
            probe = train_probe(x, probes.labels[v], C=C, standardize=False)
            specs.append(ProbePush(mlp_hook(layer), probe.w, probe.b, target, indices=idx, mean=mu, scale=sd,
                                   positions=positions, gate=gate))
        elif rule == "sign_push":
            sign = torch.sign(probes.weights[v][k, idx])
            hi, lo = probes.pos_mean[v][k, idx], probes.neg_mean[v][k, idx]

            def clamp(act, hook, idx=idx, sign=sign, hi=hi, lo=lo):
                out = act.clone()
                cur = out[..., idx]
                out[..., idx] = torch.where(sign > 0, torch.maximum(cur, hi.to(cur)), torch.minimum(cur, lo.to(cur)))
                return out
            specs.append(Lambda(mlp_hook(layer), clamp, positions=positions, gate=gate))
        else:
            raise MechvalueError(f"rule must be 'probe_push' or 'sign_push', not {rule!r}")
    return specs


def save_probe_pushes(path, specs: Sequence[ProbePush], **meta):
    """Save a list of :class:`ProbePush` edits (NeVA's, restricted to their neurons) to safetensors."""
    from mechvalue.core.artifacts import save_tensors

    tensors, items = {}, []
    for k, s in enumerate(specs):
        if not isinstance(s, ProbePush):
            raise MechvalueError(f"save_probe_pushes saves ProbePush specs, got {type(s).__name__}")
        tensors[f"{k}.w"] = torch.as_tensor(s.w).float()
        for name in ("indices", "mean", "scale"):
            if getattr(s, name) is not None:
                tensors[f"{k}.{name}"] = torch.as_tensor(getattr(s, name))
        items.append({"hook": s.hook, "b": float(s.b), "target": float(s.target), "direction": s.direction,
                      "positions": s.positions})
    return save_tensors(path, tensors, {**meta, "kind": "ProbePushes", "specs": items})


def load_probe_pushes(path) -> list[ProbePush]:
    """Inverse of :func:`save_probe_pushes` (gates are not saved: set them with ``spec.replace(gate=...)``)."""
    from mechvalue.core.artifacts import load_tensors

    t, meta = load_tensors(path, kind="ProbePushes")
    return [ProbePush(it["hook"], t[f"{k}.w"], it["b"], it["target"], indices=t.get(f"{k}.indices"),
                      mean=t.get(f"{k}.mean"), scale=t.get(f"{k}.scale"), direction=it["direction"],
                      positions=it["positions"]) for k, it in enumerate(meta["specs"])]
