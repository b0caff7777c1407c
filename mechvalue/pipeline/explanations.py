"""The audits step's neuron explanations: the dual step's shared / intrinsic / prompted neurons, explained.

With an explainer endpoint in the run config (``explain_base_url`` and ``explain_model``), the
``explain_top`` neurons of each class with the largest projection on the class's axes
(:func:`~mechvalue.analysis.neurons.top_class_neurons`) and ``explain_random`` random neurons of the same
layers are explained and scored by simulation (:mod:`mechvalue.evaluate.explain`, Bills et al. 2023);
``audits/explanations.csv`` and ``audits/explanations.json`` (status, per-class means against the random
baseline) are what the report shows. Without an endpoint only ``explanations.json`` is written, saying
so and how to configure one: the endpoint is never guessed from the environment, so the config that
``config.json`` records is everything the explanations depend on (the API key excepted).
"""

from __future__ import annotations

import pandas as pd

from mechvalue.core.artifacts import atomic_path, write_json_atomic
from mechvalue.pipeline.config import RunConfig
from mechvalue.pipeline.folder import RunFolder

CLASSES = ("shared", "intrinsic", "prompted")
HOW = ('set "explain_base_url" and "explain_model" in a --config file (or --explain-base-url / --explain-model) '
       "to an OpenAI-compatible endpoint; $OPENAI_API_KEY is sent if set")


def explain_classes(config: RunConfig, folder: RunFolder) -> dict:
    """Explain the dual classes' top neurons (or record that no endpoint is configured); returns the status."""
    out = folder.out / "audits"
    out.mkdir(parents=True, exist_ok=True)
    classes_csv = folder.out / "dual" / "neuron_classes.csv"
    if not (config.explain_base_url and config.explain_model):
        status = {"configured": False, "why": f"no explainer endpoint configured: {HOW}"}
    elif not classes_csv.exists():
        status = {"configured": True, "why": "the dual step's neuron_classes.csv is missing: add --steps dual"}
    else:
        status = _explain(config, folder, pd.read_csv(classes_csv))
    write_json_atomic(out / "explanations.json", status)
    return status


def _explain(config: RunConfig, folder: RunFolder, table: pd.DataFrame) -> dict:
    from mechvalue.analysis.neurons import top_class_neurons
    from mechvalue.evaluate.explain import Explainer, explain_neurons, summarize

    targets = {cls: top_class_neurons(table, cls, config.explain_top) for cls in CLASSES}
    neurons = list(dict.fromkeys(n for ns in targets.values() for n in ns))
    if not neurons:
        return {"configured": True, "why": "the dual step classified no neuron as shared, intrinsic or prompted"}
    explainer = Explainer(config.explain_base_url, config.explain_model, cache=folder.out / "audits" /
                          "explain_cache.jsonl", concurrency=4, seed=config.seed)
    df = explain_neurons(folder.model, neurons, None, explainer, n_random=config.explain_random, seed=config.seed)
    owner = {n: cls for cls, ns in reversed(list(targets.items())) for n in ns}
    df["class"] = [owner.get((int(r.layer), int(r.index)), "random") if r.kind == "target" else "random"
                   for r in df.itertuples()]
    with atomic_path(folder.out / "audits" / "explanations.csv") as tmp:
        df.to_csv(tmp, index=False)
    by_class = {cls: summarize(pd.concat([df[df["class"] == cls], df[df.kind == "random"]])) for cls in CLASSES
                if (df["class"] == cls).any()}
    return {"configured": True, "endpoint": config.explain_base_url, "model": config.explain_model,
            "n_targets": len(neurons), "n_random": int((df.kind == "random").sum()), "summary": summarize(df),
            "by_class": by_class, "requests": int(explainer.stats.get("requests", 0))}
