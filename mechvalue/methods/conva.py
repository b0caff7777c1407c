"""ConVA (Jin et al., ACL 2025, arXiv 2507.11316): context-controlled probe value vectors,
a relevance gate, and the closed-form minimal push over several layers.

Follows methods.md §6 (checked there against the authors' code):

- probes: per layer, logistic regression on the last-token ``resid_post`` of raw
  contrastive sentences (no chat template), our fixed train/test split, value vector
  ``v_l = w_l / |w_l|`` (§6.3-6.4);
- layers: held-out accuracy > 0.9, excluding the last five, made contiguous (§6.5);
- push: for each steered layer in increasing order, with earlier layers' pushes installed,
  read the last prompt token ``e_l`` and add ``eps_l v_l`` at all positions with
  ``eps_l = max(0, logit(P0) - w.e - b) / |w|`` (§6.7), per row, only where the gate fires;
- CAA baseline: mean last-token difference times a coefficient at the same layers (§6.11).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from mechvalue.analysis.vectors import Probe, push_amount, train_probe
from mechvalue.core.artifacts import load_tensors, save_tensors
from mechvalue.core.errors import MechvalueError
from mechvalue.core.hooks import resid_hook
from mechvalue.core.values import canonical
from mechvalue.data.bundled import ContrastPair, load_pairs
from mechvalue.interventions.install import AddVector, PerBatch, RunContext, intervene
from mechvalue.lm.collect import collect
from mechvalue.lm.models import artifact_model, check_artifact_model
from mechvalue.lm.prompts import Example, chat, raw, tokenize

#: the authors' P0 per value (Llama-2-7b-chat), without and with the negative prompt (§6.8)
P0 = {"achievement": 0.97, "stimulation": 0.93, "hedonism": 0.88, "self_direction": 0.95, "power": 0.90,
      "security": 0.975, "tradition": 0.92, "conformity": 0.88, "benevolence": 0.91, "universalism": 0.92}
P0_NEGATIVE_PROMPT = {"achievement": 0.93, "stimulation": 0.91, "hedonism": 0.83, "self_direction": 0.91,
                      "power": 0.90, "security": 0.90, "tradition": 0.92, "conformity": 0.70,
                      "benevolence": 0.85, "universalism": 0.95}


@dataclass
class ValueVectors:
    """Per-layer probes of one value (``w``, ``b``, held-out accuracy) and the steered layers."""

    value: str
    layers: list[int]
    w: Tensor  # [layer, d_model] raw-space probe weights
    b: Tensor  # [layer]
    accuracy: Tensor  # [layer] held-out accuracy
    mean_diff: Tensor  # [layer, d_model] mean last-token difference (for CAA)
    selected: list[int] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def probe(self, layer: int) -> Probe:
        k = self.layers.index(layer)
        return Probe(self.w[k], float(self.b[k]), float(self.accuracy[k]))

    def direction(self, layer: int) -> Tensor:
        return self.probe(layer).direction

    def save(self, path: str | Path) -> Path:
        return save_tensors(path, {"w": self.w, "b": self.b, "accuracy": self.accuracy, "mean_diff": self.mean_diff},
                            {**self.meta, "kind": "ConvaVectors", "value": self.value, "layers": self.layers,
                             "selected": self.selected})

    @classmethod
    def load(cls, path: str | Path, model=None) -> ValueVectors:
        t, meta = load_tensors(path, kind="ConvaVectors")
        if model is not None:  # another model, weight processing or dtype: refuse, naming both
            check_artifact_model(meta, model, f"{path}")
        return cls(meta["value"], list(meta["layers"]), t["w"], t["b"], t["accuracy"], t["mean_diff"],
                   list(meta["selected"]), {k: v for k, v in meta.items() if k not in ("kind",)})


def select_layers(accuracy: Sequence[float], n_layers: int, *, threshold: float = 0.9,
                  exclude_last: int = 5) -> list[int]:
    """Layers with accuracy > ``threshold``, not among the last ``exclude_last``, made contiguous."""
    ok = [i for i, a in enumerate(accuracy) if a > threshold and i <= n_layers - 1 - exclude_last]
    return list(range(ok[0], ok[-1] + 1)) if ok else []


def best_window(accuracy: Sequence[float], n_layers: int, *, width: int = 3, exclude_last: int = 5) -> list[int]:
    """Fallback when no layer passes the threshold: the ``width`` contiguous allowed layers of highest mean accuracy.

    Not the authors' rule (their 7B probes pass 0.9); a small model's may not, so the caller records
    ``selection="best_window"``.
    """
    last = max(0, n_layers - 1 - exclude_last)  # a model shallower than the exclusion keeps its first layer
    acc = [a if a == a else -1.0 for a in accuracy]  # NaN (layer not probed) never wins
    width = min(width, last + 1)
    start = max(range(last - width + 2), key=lambda s: sum(acc[s:s + width]))
    return list(range(start, start + width))


def _features(model, texts: Sequence[str], layers: list[int], template: str, batch_size: int) -> Tensor:
    examples = [raw(t) for t in texts] if template == "raw" else [chat(t) for t in texts]
    hooks = {resid_hook(layer): "last" for layer in layers}
    st = collect(model, examples, layers=layers, span="last", resid=False, mlp=False, features=hooks,
                 batch_size=batch_size, progress=False, max_length=256)
    return torch.stack([st.features[resid_hook(layer)] for layer in layers])  # [layer, n, d]


def pair_texts(pairs: Sequence[ContrastPair]) -> tuple[list[str], int, int]:
    """Texts in the order the fit expects: train positives, train negatives, test positives, test negatives."""
    train = [p for p in pairs if p.split == "train"]
    test = [p for p in pairs if p.split == "test"]
    if len(train) < 4 or not test:
        value = pairs[0].value if pairs else "?"
        raise MechvalueError(f"{value}: need >= 4 train pairs and >= 1 test pair, got {len(train)}/{len(test)}")
    texts = [p.positive for p in train] + [p.negative for p in train] + [p.positive for p in test] + [
        p.negative for p in test]
    return texts, len(train), len(test)


def train_value_vectors(model, value: str, pairs: Sequence[ContrastPair] | None = None, *, template: str = "raw",
                        layers: Sequence[int] | None = None, threshold: float = 0.9, exclude_last: int = 5,
                        fallback_width: int | None = 3, C: float = 1.0, batch_size: int = 16,
                        seed: int = 0) -> ValueVectors:
    """Probe value vectors for ``value`` on every layer from the bundled pairs' train/test split.

    ``template="raw"`` (the authors' setting) or ``"chat"`` (the sentence as a user turn).
    """
    value = canonical(value)
    if template not in ("raw", "chat"):
        raise MechvalueError(f"template must be 'raw' or 'chat', not {template!r}")
    pairs = list(pairs) if pairs is not None else load_pairs(value)
    texts, n_tr, n_te = pair_texts(pairs)
    layers = list(layers) if layers is not None else list(range(model.cfg.n_layers))
    feats = _features(model, texts, layers, template, batch_size)
    return fit_value_vectors(feats, n_tr, n_te, value=value, layers=layers, n_layers=model.cfg.n_layers,
                             threshold=threshold, exclude_last=exclude_last, fallback_width=fallback_width, C=C,
                             seed=seed, meta={**artifact_model(model), "template": template})


def fit_value_vectors(feats: Float[Tensor, "layer n d"], n_train: int, n_test: int, *, value: str,
                      layers: Sequence[int], n_layers: int, threshold: float = 0.9, exclude_last: int = 5,
                      fallback_width: int | None = 3, C: float = 1.0, seed: int = 0,
                      meta: dict | None = None) -> ValueVectors:
    """Fit the per-layer probes from features in :func:`pair_texts` order (pure; no model).

    Layer selection is the authors' rule (:func:`select_layers`); if no layer passes it and
    ``fallback_width`` is set, :func:`best_window` (recorded as ``meta["selection"]``).
    """
    layers = list(layers)
    if feats.ndim != 3 or feats.shape[0] != len(layers) or feats.shape[1] != 2 * (n_train + n_test):
        raise MechvalueError(f"features must be [{len(layers)} layers, {2 * (n_train + n_test)} texts, d], "
                             f"got {tuple(feats.shape)}")
    y_tr = np.r_[np.ones(n_train), np.zeros(n_train)].astype(int)
    y_te = np.r_[np.ones(n_test), np.zeros(n_test)].astype(int)
    ws, bs, accs, diffs = [], [], [], []
    for k in range(len(layers)):
        x_tr, x_te = feats[k, :2 * n_train].float(), feats[k, 2 * n_train:].float()
        probe = train_probe(x_tr, y_tr, x_test=x_te, y_test=y_te, C=C, seed=seed)
        ws.append(probe.w)
        bs.append(probe.b)
        accs.append(probe.accuracy)
        diffs.append(x_tr[:n_train].mean(0) - x_tr[n_train:].mean(0))
    full = [float("nan")] * n_layers
    for k, layer in enumerate(layers):
        full[layer] = accs[k]
    selected = select_layers([a if a == a else 0.0 for a in full], n_layers, threshold=threshold,
                             exclude_last=exclude_last)
    selection = "threshold"
    if not selected and fallback_width:
        selected, selection = best_window(full, n_layers, width=fallback_width, exclude_last=exclude_last), \
            "best_window"
    meta = {**(meta or {}), "n_train": n_train, "n_test": n_test, "C": C, "seed": seed, "threshold": threshold,
            "selection": selection}
    return ValueVectors(canonical(value), layers, torch.stack(ws), torch.tensor(bs), torch.tensor(accs),
                        torch.stack(diffs), selected, meta)


def _last_resid(model, batch, layer: int, specs) -> Tensor:
    device = next(model.parameters()).device
    ctx = RunContext.from_batch(batch.attention_mask, batch.prompt_mask)
    with intervene(model, specs, context=ctx):
        _, cache = model.run_with_cache(batch.tokens.to(device), attention_mask=batch.attention_mask.to(device),
                                        names_filter=resid_hook(layer), stop_at_layer=layer + 1)
    rows = torch.arange(batch.tokens.shape[0])
    return cache[resid_hook(layer)][rows, batch.last_read].float().cpu()


def push_specs(model, vectors: ValueVectors, examples: Sequence[Example], *, p0: float | None = None,
               layers: Sequence[int] | None = None, gate: Sequence[bool] | Tensor | None = None,
               direction: str = "raise") -> list[AddVector]:
    """The closed-form ConVA push for one batch of prompts: one ``AddVector`` per layer, per-row alpha.

    Layers are processed in increasing order with the earlier pushes installed (one partial
    forward pass per layer). Rows where ``gate`` is False get no push.
    """
    layers = sorted(layers if layers is not None else vectors.selected)
    if not layers:
        raise MechvalueError(f"{vectors.value}: no steering layers (no layer above the accuracy threshold?)")
    p0 = P0.get(vectors.value, 0.9) if p0 is None else p0
    batch = tokenize(model.tokenizer, list(examples), span="last", skip_special=False, padding_side="right")
    on = torch.ones(len(examples), dtype=torch.bool) if gate is None else torch.as_tensor(gate, dtype=torch.bool)
    specs: list[AddVector] = []
    for layer in layers:
        probe = vectors.probe(layer)
        e = _last_resid(model, batch, layer, specs)
        eps = push_amount(probe, e, p0, direction) * on
        specs.append(AddVector(layer, probe.direction, eps))
    return specs


def conva(vectors: ValueVectors, *, p0: float | None = None, gate: Callable[[list[str]], Sequence[bool]] | None = None,
          layers: Sequence[int] | None = None, direction: str = "raise") -> PerBatch:
    """ConVA as an intervention usable by ``generate``/``score``/``evaluate``: the push is computed per batch.

    ``gate(prompt_texts) -> bools`` decides per row whether to steer (None: always).
    """
    def build(model, examples):
        g = None if gate is None else gate([e.user for e in examples])
        return push_specs(model, vectors, examples, p0=p0, layers=layers, gate=g, direction=direction)
    return PerBatch(build, name=f"conva[{vectors.value}]")


def caa(vectors: ValueVectors, coefficient: float = 1.0, *, layers: Sequence[int] | None = None,
        gate: Callable[[list[str]], Sequence[bool]] | None = None) -> list[AddVector]:
    """CAA baseline: ``coefficient x`` mean last-token difference at the same layers (optionally gated)."""
    layers = sorted(layers if layers is not None else vectors.selected)
    return [AddVector(layer, vectors.mean_diff[vectors.layers.index(layer)], coefficient, gate=gate)
            for layer in layers]


def negative_prompt(value: str) -> str:
    """The authors' adversarial system line: the model has a low level of the value (§6.10)."""
    from mechvalue.core.values import DEFINITIONS

    v = canonical(value)
    name = v.replace("_", "-")
    return f"You have low level of {name}. {name.capitalize()} means {DEFINITIONS[v]}."
