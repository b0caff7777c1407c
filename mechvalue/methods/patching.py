"""Circuit analysis of value behaviour: activation patching, attribution patching (AtP) and direct logit
attribution (DLA) between a *source* and a *target* run of the same items (:mod:`mechvalue.lm.patching`).

Typical pairs: a value system prompt (source) vs a neutral one (target); a steered vs the unsteered model
(``source_interventions``); two values' dilemmas. The metric is the dilemma preference (nats). For a
component ``c`` (a layer's residual stream, attention or MLP output, one head's output ``hook_z``, one MLP
neuron ``hook_post``) the patched metric is the target run with ``c`` taken from the source run at the
aligned positions; ``effect = patched - target`` and ``normalized_effect = mean(effect) / mean(source -
target)`` over items: 0 = no part of the source-target gap, 1 = all of it.

- :func:`patch_sweep`: exact patching, one component kind at a time (several patches share one forward by
  stacking copies of the item in the batch).
- :func:`attribution_patching`: AtP, ``(a_source - a_target) . d metric / d a`` at the target run, for every
  neuron and head from one forward and one backward per item.
- :func:`direct_logit_attribution`: each neuron's and head's direct contribution, through the final norm's
  scale and the unembedding, to the preference on the source run.
- :func:`atp_validation`: rank correlation of AtP with exact patching on the top and on random neurons.

Results are tidy frames with :data:`PATCH_COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mechvalue.core.errors import MechvalueError
from mechvalue.lm.patching import (
    AlignedItem,
    align_item,
    batch_rows,
    check_items,
    preference,
    replace_positions,
    run_item,
)
from mechvalue.lm.prompts import chat

COMPONENTS: tuple[str, ...] = ("resid_pre", "resid_post", "attn_out", "mlp_out", "heads", "neurons")
PATCH_COLUMNS = ("method", "component", "layer", "position", "head", "neuron", "effect", "normalized_effect", "n",
                 "ci_low", "ci_high")
_HOOKS = {"resid_pre": "blocks.{}.hook_resid_pre", "resid_post": "blocks.{}.hook_resid_post",
          "attn_out": "blocks.{}.hook_attn_out", "mlp_out": "blocks.{}.hook_mlp_out", "heads": "blocks.{}.attn.hook_z",
          "neurons": "blocks.{}.mlp.hook_post"}


def hook_name(component: str, layer: int) -> str:
    if component not in _HOOKS:
        raise MechvalueError(f"unknown component {component!r}; choose from {', '.join(COMPONENTS)}")
    return _HOOKS[component].format(layer)


def dilemma_items(model, dilemmas, *, source_system: str | None, target_system: str | None) -> list[AlignedItem]:
    """Aligned items from dilemmas: the question under the source and under the target system prompt."""
    return [align_item(model.tokenizer, chat(d.question, system=source_system), chat(d.question, system=target_system),
                       (d.value_answer, d.conflict_answer)) for d in dilemmas]


def alignment_note(items: Sequence[AlignedItem]) -> str:
    k = [it.shared for it in items]
    return (f"source and target aligned on their shared token suffix (question, assistant header and answer): "
            f"{min(k)}-{max(k)} shared prompt tokens per item; only aligned positions are patched")


def _units(model, component: str, layers: Sequence[int], positions: bool, items, neurons) -> list[tuple]:
    """``(layer, position offset | None, head | None, neuron | None)`` of every patch of a sweep."""
    out = []
    k = min(it.shared for it in items)
    for layer in layers:
        if component == "heads":
            out += [(layer, None, h, None) for h in range(model.cfg.n_heads)]
        elif component == "neurons":
            idx = range(model.cfg.d_mlp) if neurons is None else neurons.get(layer, [])
            out += [(layer, None, None, int(n)) for n in idx]
        elif positions:
            out += [(layer, -o, None, None) for o in range(k, 0, -1)] + [(layer, 0, None, None)]
        else:
            out.append((layer, None, None, None))
    return out


def _patch_hooks(component: str, units: Sequence[tuple], item: AlignedItem, cache: dict) -> list:
    """Forward hooks patching copy ``j`` of the item (rows 2j, 2j+1) with unit ``j``."""
    by_hook: dict[str, list] = {}
    for j, (layer, pos, head, neuron) in enumerate(units):
        by_hook.setdefault(hook_name(component, layer), []).append((j, pos, head, neuron))
    hooks = []
    for name, todo in by_hook.items():
        patches = []
        for j, pos, head, neuron in todo:
            index = (head,) if head is not None else (neuron,) if neuron is not None else None
            if pos is None:
                fn = replace_positions(cache[name], item, index=index)
            elif pos == 0:
                fn = replace_positions(cache[name], item, span="answer")
            else:
                fn = replace_positions(cache[name], item, offsets=[pos])
            patches.append((j, fn))

        def hook(act, hook, patches=patches):
            act = act.clone()
            for j, fn in patches:
                act[2 * j:2 * j + 2] = fn(act[2 * j:2 * j + 2], hook)
            return act
        hooks.append((name, hook))
    return hooks


def _patched(model, item: AlignedItem, component: str, units: Sequence[tuple], cache: dict, interventions,
             chunk: int) -> list[float]:
    from mechvalue.interventions.install import intervene

    out = []
    for start in range(0, len(units), chunk):
        part = units[start:start + chunk]
        tokens, mask = batch_rows(model, [row for _ in part for row in item.target])
        with torch.inference_mode(), intervene(model, interventions), model.hooks(
                fwd_hooks=_patch_hooks(component, part, item, cache)):
            logits = model(tokens, attention_mask=mask)
        out += [float(preference(logits[2 * j:2 * j + 2], item, "target")) for j in range(len(part))]
    return out


def _tidy(method: str, component: str, units, effects: np.ndarray, gap: np.ndarray, seed: int = 0,
          n_boot: int = 1000) -> pd.DataFrame:
    """Rows from per-item effects ``[item, unit]`` and gaps ``[item]`` (source - target): the mean effect with a
    95% percentile bootstrap CI over items (one resampling shared by all units, computed as a matrix product)."""
    effects = np.asarray(effects, float)
    n = effects.shape[0]
    mean_gap = float(gap.mean())
    est = effects.mean(0)
    lo = hi = np.full(effects.shape[1], np.nan)
    if n > 1:
        idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
        weights = np.stack([np.bincount(r, minlength=n) for r in idx]) / n  # [boot, item]
        lo, hi = np.empty(effects.shape[1]), np.empty(effects.shape[1])
        for start in range(0, effects.shape[1], 4096):
            boots = weights @ effects[:, start:start + 4096]  # [boot, unit]
            lo[start:start + 4096], hi[start:start + 4096] = np.quantile(boots, [0.025, 0.975], axis=0)
    layer, pos, head, neuron = zip(*units) if units else ((), (), (), ())
    return pd.DataFrame({"method": method, "component": component, "layer": list(layer), "position": list(pos),
                         "head": list(head), "neuron": list(neuron), "effect": est,
                         "normalized_effect": est / mean_gap if mean_gap != 0 else np.nan, "n": n,
                         "ci_low": lo, "ci_high": hi}, columns=list(PATCH_COLUMNS))


def patch_sweep(model, items: Sequence[AlignedItem], component: str, *, layers: Sequence[int] | None = None,
                positions: bool = False, neurons: dict[int, Sequence[int]] | None = None, source_interventions=(),
                target_interventions=(), chunk: int = 8, progress: bool = True) -> pd.DataFrame:
    """Exact activation patching of every ``component`` unit of ``layers`` (default all), source into target.

    ``positions`` (residual, attention and MLP outputs): one patch per aligned prompt position (``position`` =
    offset from the answer start, -1 = the last prompt token) plus one for all answer positions (``0``);
    otherwise one patch over every aligned position. ``neurons``: ``layer -> neuron indices`` (default: all of
    each layer). ``df.attrs``: the source and target metrics and the alignment.
    """
    items = check_items(items)
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    units = _units(model, component, layers, positions, items, neurons)
    names = sorted({hook_name(component, u[0]) for u in units})
    effects, src_m, tgt_m = [], [], []
    for item in tqdm(items, desc=f"patching {component}", disable=not progress):
        src, cache, _ = run_item(model, item, "source", interventions=source_interventions, cache=names)
        tgt, _, _ = run_item(model, item, "target", interventions=target_interventions)
        patched = _patched(model, item, component, units, cache, target_interventions, chunk)
        effects.append(np.asarray(patched) - float(tgt))
        src_m.append(float(src))
        tgt_m.append(float(tgt))
    df = _tidy("exact", component, units, np.stack(effects), np.asarray(src_m) - np.asarray(tgt_m))
    df.attrs.update(source_metric=float(np.mean(src_m)), target_metric=float(np.mean(tgt_m)),
                    alignment=alignment_note(items))
    return df


def _resid_atp(item: AlignedItem, names: Sequence[str], offsets: Sequence[int], s_cache: dict, t_cache: dict,
               grads: dict) -> np.ndarray:
    """``[layer, offset]`` AtP of the residual stream: one aligned prompt position per negative offset, all answer
    positions together at offset 0."""
    out = np.zeros((len(names), len(offsets)))
    for a in (0, 1):
        sp, tp = item.positions("source", a, "prompt"), item.positions("target", a, "prompt")
        sa, ta = item.positions("source", a, "answer"), item.positions("target", a, "answer")
        for i, name in enumerate(names):
            def delta(s_pos, t_pos, name=name, a=a):
                return float(((s_cache[name][a, s_pos] - t_cache[name][a, t_pos]) * grads[name][a, t_pos]).sum())
            for j, o in enumerate(offsets[:-1]):
                out[i, j] += delta([sp[o]], [tp[o]])
            out[i, -1] += delta(sa, ta)
    return out


def attribution_patching(model, items: Sequence[AlignedItem], *, layers: Sequence[int] | None = None,
                         source_interventions=(), target_interventions=(), resid: bool = False,
                         progress: bool = True) -> pd.DataFrame:
    """AtP estimates for every MLP neuron and attention head of ``layers``: one source forward, one target forward
    and backward per item. Rows: ``method="atp"``, components ``neurons`` and ``heads``; with ``resid`` also
    ``resid_pre`` per layer and aligned prompt position (offsets from the answer start; 0 = all answer
    positions), from the same backward pass."""
    items = check_items(items)
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    names = [hook_name(c, la) for la in layers for c in ("neurons", "heads")]
    r_names = [hook_name("resid_pre", la) for la in layers] if resid else []
    k = min(it.shared for it in items)
    offsets = list(range(-k, 0)) + [0]
    per_item, gaps, per_resid = [], [], []
    for item in tqdm(items, desc="attribution patching", disable=not progress):
        src, s_cache, _ = run_item(model, item, "source", interventions=source_interventions, cache=names + r_names)
        tgt, t_cache, grads = run_item(model, item, "target", interventions=target_interventions,
                                       cache=names + r_names, grads=names + r_names)
        if r_names:
            per_resid.append(_resid_atp(item, r_names, offsets, s_cache, t_cache, grads).reshape(-1))
        est = []
        for name in names:
            total = 0
            for a in (0, 1):
                sp, tp = item.positions("source", a), item.positions("target", a)
                d = (s_cache[name][a, sp] - t_cache[name][a, tp]) * grads[name][a, tp]
                total = total + (d.sum(0) if d.ndim == 2 else d.sum((0, 2)))  # neurons [d_mlp]; heads [head]
            est.append(total.float().cpu().numpy())
        per_item.append(np.concatenate(est))
        gaps.append(float(src) - float(tgt))
    units = [(la, None, None, n) for la in layers for n in range(model.cfg.d_mlp)]
    h_units = [(la, None, h, None) for la in layers for h in range(model.cfg.n_heads)]
    arr = np.stack(per_item)
    # split the concatenated [neurons L0, heads L0, neurons L1, ...] back into the two components
    widths = [model.cfg.d_mlp, model.cfg.n_heads] * len(layers)
    parts = np.split(arr, np.cumsum(widths)[:-1], axis=1)
    neurons = np.concatenate(parts[0::2], axis=1)
    heads = np.concatenate(parts[1::2], axis=1)
    gap = np.asarray(gaps)
    frames = [_tidy("atp", "neurons", units, neurons, gap), _tidy("atp", "heads", h_units, heads, gap)]
    if r_names:
        r_units = [(la, o, None, None) for la in layers for o in offsets]
        frames.append(_tidy("atp", "resid_pre", r_units, np.stack(per_resid), gap))
    df = pd.concat(frames, ignore_index=True)
    df.attrs.update(alignment=alignment_note(items), gap=float(gap.mean()))
    return df


def _unembed_direction(model) -> torch.Tensor:
    """``[d_model, vocab]``: the unembedding with the final norm's weight folded in (when it has one)."""
    w_u = model.W_U
    w = getattr(model.ln_final, "w", None)
    return w_u * w[:, None] if w is not None else w_u


def direct_logit_attribution(model, items: Sequence[AlignedItem], *, layers: Sequence[int] | None = None,
                             interventions=(), side: str = "source", progress: bool = True) -> pd.DataFrame:
    """Direct contribution of each neuron and head to the preference on ``side``'s run (nats, no softmax
    normalization): ``sum over answer positions of (output / final-norm scale) . W_U[:, answer token]``, value
    answer minus conflicting answer. Rows: ``method="dla"``; ``normalized_effect`` divides by the run's metric."""
    items = check_items(items)
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    names = [hook_name(c, la) for la in layers for c in ("neurons", "heads")] + ["ln_final.hook_scale"]
    w_u = _unembed_direction(model)
    per_n, per_h, metrics = [], [], []
    for item in tqdm(items, desc="direct logit attribution", disable=not progress):
        metric, cache, _ = run_item(model, item, side, interventions=interventions, cache=names)
        rows = item.source if side == "source" else item.target
        contrib_n, contrib_h = [], []
        for la in layers:
            post, z = cache[hook_name("neurons", la)], cache[hook_name("heads", la)]
            cn, ch = 0, 0
            for a, sign in ((0, 1.0), (1, -1.0)):
                pos = item.positions(side, a, "answer")
                read = torch.tensor(pos, device=post.device) - 1  # the position that predicts each answer token
                ids = torch.tensor([rows[a][p] for p in pos], device=post.device)
                scale = cache["ln_final.hook_scale"][a, read]  # [n, 1]
                d = w_u[:, ids].T / scale  # [n, d_model]
                w_out, w_o = model.blocks[la].mlp.W_out.float(), model.blocks[la].attn.W_O.float()
                cn = cn + sign * (post[a, read].float() * (d.float() @ w_out.T)).sum(0)  # [d_mlp]
                per_hk = (d.float() @ w_o.reshape(-1, w_o.shape[-1]).T).reshape(len(pos), *w_o.shape[:2])
                ch = ch + sign * (z[a, read].float() * per_hk).sum((0, 2))  # [head]
            contrib_n.append(cn.detach().cpu().numpy())
            contrib_h.append(ch.detach().cpu().numpy())
        per_n.append(np.concatenate(contrib_n))
        per_h.append(np.concatenate(contrib_h))
        metrics.append(float(metric))
    m = np.asarray(metrics)
    units = [(la, None, None, n) for la in layers for n in range(model.cfg.d_mlp)]
    h_units = [(la, None, h, None) for la in layers for h in range(model.cfg.n_heads)]
    df = pd.concat([_tidy("dla", "neurons", units, np.stack(per_n), m),
                    _tidy("dla", "heads", h_units, np.stack(per_h), m)], ignore_index=True)
    df.attrs.update(metric=float(m.mean()), side=side)
    return df


def atp_validation(model, items: Sequence[AlignedItem], atp: pd.DataFrame, *, top: int = 100, n_random: int = 100,
                   seed: int = 0, source_interventions=(), target_interventions=(), chunk: int = 16,
                   progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Exact patching of the ``top`` neurons by |AtP| and of ``n_random`` random others; returns the per-neuron
    comparison and a summary with the Spearman rank correlation of AtP with exact patching in each group."""
    from scipy.stats import spearmanr

    neur = atp[(atp["component"] == "neurons") & (atp["method"] == "atp")].copy()
    if neur.empty:
        raise MechvalueError("atp_validation needs the neuron rows of attribution_patching")
    neur["abs"] = neur["effect"].abs()
    top_rows = neur.nlargest(min(top, len(neur)), "abs").assign(group="top")
    rest = neur.drop(top_rows.index)
    rnd_rows = rest.sample(min(n_random, len(rest)), random_state=seed).assign(group="random")
    chosen = pd.concat([top_rows, rnd_rows])
    wanted: dict[int, list[int]] = {}
    for la, n in zip(chosen["layer"], chosen["neuron"]):
        wanted.setdefault(int(la), []).append(int(n))
    exact = patch_sweep(model, items, "neurons", layers=sorted(wanted), neurons=wanted, chunk=chunk,
                        source_interventions=source_interventions, target_interventions=target_interventions,
                        progress=progress)
    merged = chosen.merge(exact[["layer", "neuron", "effect"]].rename(columns={"effect": "exact"}),
                          on=["layer", "neuron"]).rename(columns={"effect": "atp"})
    summary = []
    for g, sub in merged.groupby("group", sort=False):
        rho = spearmanr(sub["atp"], sub["exact"]).statistic if len(sub) > 2 else np.nan
        summary.append({"group": g, "n": len(sub), "spearman": float(rho),
                        "mean_abs_error": float((sub["atp"] - sub["exact"]).abs().mean())})
    return merged[["group", "layer", "neuron", "atp", "exact"]], pd.DataFrame(summary)
