"""The main job's ``circuits`` step: where a value system prompt changes the model's dilemma choices.

Per value of ``config.circuit_values``: the value's dilemmas asked under one of its system prompts (source)
and under the model's default (target), aligned on their shared suffix;

- AtP of every neuron, every head, and the residual stream per layer and aligned position (all items);
- direct logit attribution of every neuron and head on the source run (all items);
- exact patching of each layer's attention and MLP output (the first ``circuit_exact_items`` items);
- AtP checked against exact patching on the top and on random neurons (``circuit_validate`` each; one item);
- the overlap of the top AtP neurons with ValueLocate's, NeVA's and the dual W_out classes' neurons, against
  the overlap random neurons would have.

Files under ``circuits/``: ``atp_<v>.csv``, ``dla_<v>.csv``, ``exact_<v>.csv``, ``validation_<v>.csv``,
``validation_summary_<v>.csv``, ``overlap_<v>.csv`` and ``tokens_<v>.json`` (the position axis).
"""

from __future__ import annotations

import json

import pandas as pd

from mechvalue.core.artifacts import write_json_atomic
from mechvalue.core.values import DIMENSION_WEIGHTS, canonical_dimension
from mechvalue.pipeline.config import RunConfig
from mechvalue.pipeline.folder import RunFolder

TOP_OVERLAP = 100


def _neuron_sets(folder: RunFolder, value: str) -> dict[str, set[tuple[int, int]]]:
    """The run's other neuron selections for ``value``: NeVA's set, ValueLocate's sets of the dimensions that
    contain it, the dual W_out classes."""
    from mechvalue.analysis.neurons import NeuronSet

    out: dict[str, set[tuple[int, int]]] = {}
    p = folder.out / "neva" / f"neurons_{value}.safetensors"
    if p.exists():
        s = NeuronSet.load(p)
        out["NeVA"] = set(zip(s.layers.tolist(), s.indices.tolist()))
    for dim, weights in DIMENSION_WEIGHTS.items():
        p = folder.out / "valuelocate" / f"neurons_{canonical_dimension(dim)}.safetensors"
        if value in weights and p.exists():
            s = NeuronSet.load(p)
            out[f"ValueLocate {canonical_dimension(dim)}"] = set(zip(s.layers.tolist(), s.indices.tolist()))
    p = folder.out / "dual" / "neuron_classes.csv"
    if p.exists():
        df = pd.read_csv(p)
        df = df[(df["value"] == value) & (df["class"].isin(["shared", "intrinsic", "prompted"]))]
        for c, g in df.groupby("class"):
            out[f"dual {c}"] = set(zip(g["layer"].astype(int), g["neuron"].astype(int)))
    return out


def overlap_table(atp: pd.DataFrame, sets: dict[str, set], n_neurons: int, top: int = TOP_OVERLAP) -> pd.DataFrame:
    """Overlap of the ``top`` neurons by |AtP| with each set, and the overlap expected of ``top`` random neurons
    (``top * |set| / n_neurons``)."""
    neu = atp[atp["component"] == "neurons"].assign(a=lambda d: d["effect"].abs()).nlargest(top, "a")
    chosen = set(zip(neu["layer"].astype(int), neu["neuron"].astype(int)))
    rows = [{"set": name, "size": len(s), "top_atp": len(chosen), "overlap": len(chosen & s),
             "expected_by_chance": len(chosen) * len(s) / n_neurons,
             "ratio_to_chance": (len(chosen & s) / (len(chosen) * len(s) / n_neurons)) if s else float("nan")}
            for name, s in sets.items()]
    return pd.DataFrame(rows, columns=["set", "size", "top_atp", "overlap", "expected_by_chance", "ratio_to_chance"])


def token_views(model, item, atp: pd.DataFrame, k: int = 5) -> list[dict]:
    """The top ``k`` neurons by |AtP|: their activation on every token of the item's value-answer row, in the
    source and in the target run (for token views in the report)."""
    from mechvalue.lm.patching import run_item
    from mechvalue.methods.patching import hook_name

    neu = atp[atp["component"] == "neurons"].assign(a=lambda d: d["effect"].abs()).nlargest(k, "a")
    names = sorted({hook_name("neurons", int(la)) for la in neu["layer"]})
    views = []
    runs = {side: run_item(model, item, side, cache=names)[1] for side in ("source", "target")}
    for la, n, e in zip(neu["layer"].astype(int), neu["neuron"].astype(int), neu["effect"]):
        row = {"layer": la, "neuron": n, "atp": float(e)}
        for side in ("source", "target"):
            ids = (item.source if side == "source" else item.target)[0]
            row[f"{side}_tokens"] = [model.tokenizer.decode([t]) for t in ids]
            row[f"{side}_acts"] = runs[side][hook_name("neurons", la)][0, :len(ids), n].float().tolist()
        views.append(row)
    return views


def step_circuits(config: RunConfig, folder: RunFolder) -> dict:
    from mechvalue.data.bundled import load_dilemmas, load_system_prompts
    from mechvalue.methods.patching import (
        alignment_note,
        atp_validation,
        attribution_patching,
        dilemma_items,
        direct_logit_attribution,
        patch_sweep,
    )

    model, out = folder.model, folder.out / "circuits"
    out.mkdir(parents=True, exist_ok=True)
    info = {}
    for v in config.circuit_values:
        prompts = load_system_prompts(v)
        system = prompts[config.seed % len(prompts)].text
        items = dilemma_items(model, load_dilemmas(v)[:config.circuit_items], source_system=system, target_system=None)
        atp = attribution_patching(model, items, resid=True)
        dla = direct_logit_attribution(model, items)
        sweeps = [patch_sweep(model, items[:config.circuit_exact_items], c) for c in ("attn_out", "mlp_out")]
        exact = pd.concat(sweeps, ignore_index=True)
        pairs, summary = atp_validation(model, items[:1], atp, top=config.circuit_validate,
                                        n_random=config.circuit_validate)
        overlap = overlap_table(atp, _neuron_sets(folder, v), model.cfg.n_layers * model.cfg.d_mlp)
        write_json_atomic(out / f"token_views_{v}.json", token_views(model, items[0], atp))
        for name, df in (("atp", atp), ("dla", dla), ("exact", exact), ("validation", pairs),
                         ("validation_summary", summary), ("overlap", overlap)):
            df.to_csv(out / f"{name}_{v}.csv", index=False)
        first = items[0]
        suffix = first.target[0][first.prompt_len[1] - first.shared:first.prompt_len[1]]
        k = min(it.shared for it in items)
        tokens = [model.tokenizer.decode([t]) for t in suffix[-k:]]
        write_json_atomic(out / f"tokens_{v}.json", {"offsets": list(range(-k, 0)), "tokens": tokens,
                                                     "system_prompt": system, "n_items": len(items),
                                                     "alignment": alignment_note(items),
                                                     "source_metric": sweeps[0].attrs.get("source_metric"),
                                                     "target_metric": sweeps[0].attrs.get("target_metric")})
        info[v] = {"items": len(items), "exact_items": min(len(items), config.circuit_exact_items),
                   "spearman": json.loads(summary.to_json(orient="records"))}
    return {"values": list(config.circuit_values), "per_value": info}
