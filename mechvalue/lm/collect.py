"""Streaming activation statistics in one pass over a dataset.

For chosen layers, :func:`collect` accumulates in float32, over the read span of each row
(padding never counts):

- ``resid_mean[l]``: residual stream averaged over the span of each example, then over
  examples (the dual-mechanism paper's token-average-per-response convention);
- ``act_prob[l, i]``: share of read tokens with ``blocks.{l}.mlp.hook_pre[..., i] > 0``
  (``act(pre) > 0`` iff ``pre > 0`` for ReLU/GELU/SiLU, for gated and plain MLPs);
- ``post_mean[l, i]``: mean of ``blocks.{l}.mlp.hook_post`` over read tokens;
- on request, per-example feature matrices (last read token or span mean) for any hook.

Memory is O(layers x width) except for the per-example features asked for. Long runs can
checkpoint their accumulators and resume.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import einops
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechvalue.core.artifacts import load_tensors, save_tensors
from mechvalue.core.errors import CorruptFileError, DataError, HookError, MechvalueError
from mechvalue.core.hooks import check_hook, check_layers, mlp_hook, resid_hook
from mechvalue.lm.backends import backend_of, forward
from mechvalue.lm.models import artifact_model, check_artifact_model, model_info
from mechvalue.lm.prompts import Example, Span, TokenBatch, check_count, context_limit, iter_batches

Reduce = Literal["last", "mean"]


@dataclass
class ActivationStats:
    """Per-layer statistics of one dataset under one span rule.

    Attributes:
        layers: block indices, in the order of the first axis of the tensors.
        resid_mean: ``[layer, d_model]`` mean residual stream (``meta["resid_hook"]``), or None.
        act_prob: ``[layer, d_mlp]`` activation probability in [0, 1], or None.
        post_mean: ``[layer, d_mlp]`` mean ``hook_post`` activation, or None.
        n_examples: rows read; n_tokens: read tokens (the denominator of act_prob).
        features: hook name -> ``[n_examples, d]`` per-example features in input order.
        meta: model id, weight processing, hooks, span rule, counts, package versions.
    """

    layers: list[int]
    resid_mean: Float[Tensor, "layer d_model"] | None
    act_prob: Float[Tensor, "layer d_mlp"] | None
    post_mean: Float[Tensor, "layer d_mlp"] | None
    n_examples: int
    n_tokens: int
    features: dict[str, Float[Tensor, "example d"]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def layer_pos(self, layer: int) -> int:
        if layer not in self.layers:
            raise HookError(f"layer {layer} was not collected (collected: {self.layers})")
        return self.layers.index(layer)

    def save(self, path: str | Path) -> Path:
        tensors = {f"feature::{k}": v for k, v in self.features.items()}
        for name in ("resid_mean", "act_prob", "post_mean"):
            if getattr(self, name) is not None:
                tensors[name] = getattr(self, name)
        meta = {**self.meta, "kind": "ActivationStats", "layers": self.layers,
                "n_examples": self.n_examples, "n_tokens": self.n_tokens}
        return save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path, model=None) -> ActivationStats:
        """Load; with ``model``, refuse statistics of another model or weight processing."""
        tensors, meta = load_tensors(path, kind="ActivationStats")
        try:
            stats = cls(layers=list(meta["layers"]), resid_mean=tensors.get("resid_mean"),
                        act_prob=tensors.get("act_prob"), post_mean=tensors.get("post_mean"),
                        n_examples=int(meta["n_examples"]), n_tokens=int(meta["n_tokens"]),
                        features={k.split("::", 1)[1]: v for k, v in tensors.items() if k.startswith("feature::")},
                        meta=meta)
        except KeyError as exc:
            raise CorruptFileError(f"{path}: metadata lacks {exc}") from exc
        if model is not None:
            stats.check_model(model)
        return stats

    def check_model(self, model) -> None:
        """Refuse statistics collected on another model, weight processing or dtype."""
        check_artifact_model(self.meta, model, "these activation statistics")


class _Accumulator:
    """Float32 running sums filled by forward hooks; one instance per collection."""

    def __init__(self, layers, d_model, d_mlp, resid, mlp, features, device):
        n = len(layers)
        self.pos = {layer: k for k, layer in enumerate(layers)}
        z = lambda *s: torch.zeros(*s, dtype=torch.float32, device=device)  # noqa: E731
        self.resid_sum = z(n, d_model) if resid else None
        self.active = z(n, d_mlp) if mlp else None
        self.post_sum = z(n, d_mlp) if mlp else None
        self.features = {k: [] for k in features}
        self.n_examples = 0
        self.n_tokens = 0
        self.batch: TokenBatch | None = None
        self.weights: Tensor | None = None  # [batch, pos] read mask as float
        self.per_example: Tensor | None = None  # [batch, pos] read mask / span length

    def start(self, batch: TokenBatch) -> None:
        self.batch = batch
        self.weights = batch.read_mask.float()
        self.per_example = self.weights / self.weights.sum(dim=1, keepdim=True)
        self.n_examples += batch.tokens.shape[0]
        self.n_tokens += int(batch.read_mask.sum())

    def resid_hook(self, layer):
        k = self.pos[layer]

        def hook(act, hook):
            self.resid_sum[k] += einops.einsum(act.float(), self.per_example, "b p d, b p -> d")
        return hook

    def pre_hook(self, layer):
        k = self.pos[layer]

        def hook(act, hook):
            self.active[k] += einops.einsum((act > 0).float(), self.weights, "b p n, b p -> n")
        return hook

    def post_hook(self, layer):
        k = self.pos[layer]

        def hook(act, hook):
            self.post_sum[k] += einops.einsum(act.float(), self.weights, "b p n, b p -> n")
        return hook

    def feature_hook(self, name, reduce):
        def hook(act, hook):
            if act.ndim < 3 or tuple(act.shape[:2]) != tuple(self.batch.tokens.shape):
                raise HookError(f"feature hook {name!r} gives activations of shape {tuple(act.shape)}, but "
                                f"features need [batch, pos, ...] = {tuple(self.batch.tokens.shape)} + (...); "
                                "use a residual, MLP or per-position attention hook (not hook_pattern)")
            act = act.flatten(2)  # e.g. attn.hook_z [b, p, head, d_head] -> [b, p, head * d_head]
            if reduce == "last":
                rows = torch.arange(act.shape[0], device=act.device)
                feat = act[rows, self.batch.last_read].float()
            else:
                feat = einops.einsum(act.float(), self.per_example, "b p d, b p -> b d")
            self.features[name].append((self.batch.index.cpu(), feat.cpu()))
        return hook


def _normalize_features(model, features) -> dict[str, str]:
    if features is None:
        return {}
    if isinstance(features, str):
        features = [features]
    if not isinstance(features, Mapping):
        features = {name: "last" for name in features}
    out = {}
    for name, reduce in features.items():
        check_hook(model, name)
        if reduce not in ("last", "mean"):
            raise DataError(f"feature reduction for {name!r} must be 'last' or 'mean', not {reduce!r}")
        out[name] = reduce
    return out


def _run(model, batch: TokenBatch, hooks, stop_at_layer: int | None) -> None:
    with model.hooks(fwd_hooks=hooks):  # explicit mask on both backends: never inferred from pad-token ids
        if backend_of(model) == "hooked":
            forward(model, batch.tokens, batch.attention_mask, return_type=None, stop_at_layer=stop_at_layer)
        else:
            forward(model, batch.tokens, batch.attention_mask)


def _fingerprint(examples: Sequence[Example], settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for ex in examples:
        h.update(repr(ex).encode())
    return h.hexdigest()[:20]


@torch.inference_mode()
def collect(model, examples: Sequence[Example], *, layers: Sequence[int] | int | None = None,
            span: Span = "prompt", resid: bool = True, mlp: bool = True,
            resid_hook_name: str = "hook_resid_post", features: Mapping[str, Reduce] | Sequence[str] | None = None,
            batch_size: int = 16, max_tokens: int | None = 1024, skip_special: bool = True,
            max_length: int | None = None,
            progress: bool = True, desc: str = "collect", checkpoint: str | Path | None = None,
            checkpoint_every: int = 20) -> ActivationStats:
    """One pass over ``examples`` accumulating :class:`ActivationStats` at ``layers`` (default all).

    Args:
        span: which tokens are read: ``"prompt"``, ``"last"`` (last prompt token), ``"response"``, ``"all"``.
        resid / mlp: collect residual means / MLP activation probabilities and means.
        resid_hook_name: ``hook_resid_post`` (default), ``hook_resid_pre`` or ``hook_resid_mid``.
        features: hook names (optionally mapped to ``"last"`` or ``"mean"``) whose per-example
            features are kept, in input order, as ``[n_examples, d]`` float32 tensors.
        max_tokens: cap on rows x padded width per batch (bounds peak memory independently of
            the dataset's longest example); None for plain ``batch_size`` batches.
        checkpoint: file to save accumulators to every ``checkpoint_every`` batches; a rerun
            with the same inputs and settings resumes from it (it is deleted on success).

    Arguments are checked and every batch tokenized (refusing an example longer than the model's
    context, ``model.cfg.n_ctx``, after ``max_length`` truncation) before the first forward pass.
    """
    layers = check_layers(model, layers)
    if not examples:
        raise DataError("no examples to collect over: the dataset is empty")
    _check_sizes(batch_size=batch_size, max_tokens=max_tokens, max_length=max_length,
                 checkpoint_every=checkpoint_every)
    feats = _normalize_features(model, features)
    if not (resid or mlp or feats):
        raise DataError("nothing to collect: set resid=True, mlp=True or ask for features")
    cfg = model.cfg
    device = next(model.parameters()).device
    acc = _Accumulator(layers, cfg.d_model, cfg.d_mlp, resid, mlp, feats, device)
    hooks = []
    for layer in layers:
        if resid:
            hooks.append((check_hook(model, resid_hook(layer, resid_hook_name)), acc.resid_hook(layer)))
        if mlp:
            hooks.append((check_hook(model, mlp_hook(layer, "hook_pre")), acc.pre_hook(layer)))
            hooks.append((check_hook(model, mlp_hook(layer, "hook_post")), acc.post_hook(layer)))
    for name, reduce in feats.items():
        hooks.append((name, acc.feature_hook(name, reduce)))
    needed = [int(n.split(".")[1]) for n, _ in hooks if n.startswith("blocks.")]
    only_blocks = all(n.startswith("blocks.") for n, _ in hooks)
    stop_at = max(needed) + 1 if only_blocks and max(needed) + 1 < cfg.n_layers else None

    settings = {"layers": layers, "span": span, "resid": resid, "mlp": mlp, "resid_hook": resid_hook_name,
                "features": feats, "batch_size": batch_size, "max_tokens": max_tokens, "skip_special": skip_special,
                "max_length": max_length, "model": model_info(model).get("model_id")}
    fingerprint = _fingerprint(examples, settings)
    batches = list(iter_batches(model.tokenizer, examples, batch_size, span, skip_special=skip_special,
                                max_length=max_length, max_tokens=max_tokens, n_ctx=context_limit(model)))
    done = _resume(acc, checkpoint, fingerprint) if checkpoint else 0
    for i, batch in enumerate(tqdm(batches, desc=desc, disable=not progress, initial=done, total=len(batches))):
        if i < done:
            continue
        acc.start(batch.to(device))
        _run(model, acc.batch, hooks, stop_at)
        if checkpoint and (i + 1) % checkpoint_every == 0 and i + 1 < len(batches):
            _save_checkpoint(acc, checkpoint, fingerprint, i + 1)

    features_out = {}
    for name, parts in acc.features.items():
        idx = torch.cat([p[0] for p in parts])
        vals = torch.cat([p[1] for p in parts])
        out = torch.empty_like(vals)
        out[idx] = vals
        features_out[name] = out
    meta = {**artifact_model(model), "span": span,
            "resid_hook": resid_hook_name if resid else None, "skip_special": skip_special,
            "feature_reduce": feats, "fingerprint": fingerprint}
    stats = ActivationStats(
        layers=layers,
        resid_mean=(acc.resid_sum / acc.n_examples).cpu() if resid else None,
        act_prob=(acc.active / acc.n_tokens).cpu() if mlp else None,
        post_mean=(acc.post_sum / acc.n_tokens).cpu() if mlp else None,
        n_examples=acc.n_examples, n_tokens=acc.n_tokens, features=features_out, meta=meta,
    )
    if checkpoint and Path(checkpoint).exists():
        Path(checkpoint).unlink()
    return stats


def _check_sizes(**sizes: int | None) -> None:
    """Counts that must be integers >= 1 (None: not set)."""
    for name, value in sizes.items():
        if value is not None or name in ("batch_size", "checkpoint_every"):
            check_count(value, name)


def _save_checkpoint(acc: _Accumulator, path, fingerprint: str, done: int) -> None:
    tensors = {}
    for name in ("resid_sum", "active", "post_sum"):
        if getattr(acc, name) is not None:
            tensors[name] = getattr(acc, name)
    for fname, parts in acc.features.items():
        if parts:
            tensors[f"fidx::{fname}"] = torch.cat([p[0] for p in parts])
            tensors[f"fval::{fname}"] = torch.cat([p[1] for p in parts])
    save_tensors(path, tensors, {"kind": "CollectCheckpoint", "fingerprint": fingerprint, "done": done,
                                 "n_examples": acc.n_examples, "n_tokens": acc.n_tokens})


def _resume(acc: _Accumulator, path, fingerprint: str) -> int:
    if not Path(path).exists():
        return 0
    tensors, meta = load_tensors(path, kind="CollectCheckpoint")
    if meta.get("fingerprint") != fingerprint:
        raise CorruptFileError(f"{path}: checkpoint belongs to other inputs or settings; delete it to start over")
    for name in ("resid_sum", "active", "post_sum"):
        if getattr(acc, name) is not None:
            getattr(acc, name).copy_(tensors[name])
    for fname in acc.features:
        if f"fidx::{fname}" in tensors:
            acc.features[fname].append((tensors[f"fidx::{fname}"], tensors[f"fval::{fname}"]))
    acc.n_examples, acc.n_tokens = int(meta["n_examples"]), int(meta["n_tokens"])
    return int(meta["done"])


def merge_stats(a: ActivationStats, b: ActivationStats) -> ActivationStats:
    """Statistics of the union of two disjoint datasets read with the same rule (token-weighted means)."""
    if a.layers != b.layers:
        raise MechvalueError(f"cannot merge statistics of layers {a.layers} and {b.layers}")
    wa, wb = a.n_tokens / max(1, a.n_tokens + b.n_tokens), b.n_tokens / max(1, a.n_tokens + b.n_tokens)

    def mix(x, y):
        return None if x is None or y is None else wa * x + wb * y
    feats = {k: torch.cat([a.features[k], b.features[k]]) for k in a.features if k in b.features}
    return ActivationStats(a.layers, mix(a.resid_mean, b.resid_mean), mix(a.act_prob, b.act_prob),
                           mix(a.post_mean, b.post_mean), a.n_examples + b.n_examples, a.n_tokens + b.n_tokens,
                           feats, {**a.meta, "n_examples": a.n_examples + b.n_examples,
                                   "n_tokens": a.n_tokens + b.n_tokens, "merged": True})
