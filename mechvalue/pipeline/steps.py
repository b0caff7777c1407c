"""The steps of ``mechvalue run``: typed functions ``(config, folder) -> info`` (see :mod:`mechvalue.pipeline.run`).

Each writes its artifacts under ``folder.out / <step>`` and returns a small JSON-ready info dict that the
runner stores in the step's ``DONE.json``. :data:`STEP_FUNCTIONS` maps every name of
:data:`mechvalue.pipeline.config.STEPS` to its function.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mechvalue.core.artifacts import append_jsonl, atomic_path, read_jsonl_rows
from mechvalue.core.errors import MechvalueError
from mechvalue.core.values import OPPOSING_DIMENSIONS, VALUES
from mechvalue.pipeline.circuits import step_circuits
from mechvalue.pipeline.config import STEPS, RunConfig
from mechvalue.pipeline.folder import RunFolder


def _tables(folder: Path, tables: dict[str, pd.DataFrame], index: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        with atomic_path(folder / f"{name}.csv") as tmp:
            df.to_csv(tmp, index=index)


def step_judge(config: RunConfig, folder: RunFolder) -> dict:
    metrics = folder.judge.meta.get("metrics", {}).get("mean", {})
    return {"judge": "classifier", "test_metrics": metrics}


# ------------------------------------------------------------------ ValueLocate

def step_valuelocate(config: RunConfig, folder: RunFolder) -> dict:
    from mechvalue.analysis.neurons import threshold_sets
    from mechvalue.data.bundled import load_dilemmas, load_portraits
    from mechvalue.methods.valuelocate import ValueLocateConfig, baseline_sets, causal_test, locate

    out = folder.out / "valuelocate"
    vl_cfg = ValueLocateConfig(tau=config.vl_tau, max_questions=config.vl_max_questions, batch_size=config.batch_size,
                               seed=config.seed)
    res = locate(folder.model, vl_cfg)
    res.save(out)
    info = {"fraction_selected": float(res.fraction_selected()), "set_sizes": {k: len(s) for k, s in res.sets.items()}}
    fr = res.fraction_vs_tau()
    _tables(out, {"fraction_vs_tau": fr, "layer_counts": res.layer_counts()})
    causal_tau = _causal_tau(fr, config.vl_causal_tau)
    if causal_tau != res.config.tau:  # the causal test on sets that are mostly signal, not chance
        sets = {}
        for a, b in OPPOSING_DIMENSIONS:
            sets[a], sets[b] = threshold_sets(res.deltas[f"{a}|{b}"], causal_tau, res.layers, names=(a, b))
        res = dataclasses.replace(res, sets=sets, config=dataclasses.replace(res.config, tau=causal_tau))
        for name, s in sets.items():
            s.save(out / f"causal_neurons_{name}.safetensors")
    _tables(out, {"overlaps": res.overlaps()}, index=True)
    rng = random.Random(config.seed)
    dilemmas, items = [], []
    for v in VALUES:
        ds, ps = load_dilemmas(v), load_portraits(v)
        dilemmas += rng.sample(ds, min(config.vl_dilemmas_per_value, len(ds)))
        items += rng.sample(ps, min(config.vl_items_per_value, len(ps)))
    causal = []
    for a, _b in OPPOSING_DIMENSIONS:  # one target per axis: the first-named side
        if len(res.sets[a]) == 0:
            continue
        causal.append(causal_test(folder.model, res, a, factors=(config.vl_factor,), n_random=config.vl_n_random,
                                  dilemmas=dilemmas, items=items, batch_size=config.batch_size,
                                  random_mode="assigned",
                                  baselines={k: s for k, s in baseline_sets(res, a).items()
                                             if k != "random" and not config.quick}))
    causal_df = pd.concat(causal, ignore_index=True) if causal else pd.DataFrame()
    if len(causal_df):
        causal_df["tau"] = causal_tau
    _tables(out, {"causal": causal_df})
    at = fr[fr.tau == config.vl_tau]
    return {**info, "causal_tau": causal_tau, "causal_set_sizes": {k: len(s) for k, s in res.sets.items()},
            "fraction_at_tau": float(at.fraction.iloc[0]) if len(at) else None,
            "input_mode": vl_cfg.input_mode}


def _causal_tau(fractions: pd.DataFrame, rule: float | str) -> float:
    """A number, or ``"fdr"``: the smallest tau of the sweep whose chance-level (split-half null)
    selection is at most a tenth of the real one, i.e. an estimated false-discovery rate <= 10%."""
    if not isinstance(rule, str):
        return float(rule)
    if rule != "fdr":
        raise MechvalueError(f"vl_causal_tau must be a number or 'fdr', not {rule!r}")
    if "null_fraction" not in fractions:
        return float(fractions.tau.iloc[0])
    ok = fractions[(fractions.fraction > 0) & (fractions.null_fraction <= 0.1 * fractions.fraction)]
    return float(ok.tau.min() if len(ok) else fractions.tau.max())


# ------------------------------------------------------------------ ConVA and NeVA (one pass over the pairs)

def _pair_features(config: RunConfig, folder: RunFolder) -> dict:
    """Last-token resid_post at every layer and hook_post at NeVA's candidate layers, all pairs, raw text."""
    if folder.pair_features is not None:
        return folder.pair_features
    from mechvalue.core.hooks import mlp_hook, resid_hook
    from mechvalue.data.bundled import load_pairs
    from mechvalue.lm.collect import collect
    from mechvalue.lm.prompts import raw
    from mechvalue.methods.conva import pair_texts
    from mechvalue.methods.neva import default_layers

    model = folder.model
    n_layers = model.cfg.n_layers
    neva_layers = default_layers(n_layers)
    texts, spans, owner, label, split = [], {}, [], [], []
    for v in config.values:  # per value: train positives, train negatives, test positives, test negatives
        t, n_tr, n_te = pair_texts(load_pairs(v))
        spans[v] = (len(texts), n_tr, n_te)
        texts += t
        owner += [v] * len(t)
        label += [1] * n_tr + [0] * n_tr + [1] * n_te + [0] * n_te
        split += ["train"] * 2 * n_tr + ["test"] * 2 * n_te
    hooks = {resid_hook(layer): "last" for layer in range(n_layers)}
    hooks.update({mlp_hook(layer): "last" for layer in neva_layers})
    st = collect(model, [raw(t) for t in texts], span="last", resid=False, mlp=False, features=hooks,
                 batch_size=config.batch_size, desc="pairs", max_length=256)
    resid = torch.stack([st.features[resid_hook(layer)] for layer in range(n_layers)])
    mlp = torch.stack([st.features[mlp_hook(layer)] for layer in neva_layers])
    folder.pair_features = {"resid": resid, "mlp": mlp, "spans": spans, "neva_layers": neva_layers, "owner": owner,
                       "label": label, "split": split}
    return folder.pair_features


def step_conva(config: RunConfig, folder: RunFolder) -> dict:
    from mechvalue.analysis.vectors import cosine
    from mechvalue.lm.models import artifact_model
    from mechvalue.methods.conva import fit_value_vectors

    feats = _pair_features(config, folder)
    model, out = folder.model, folder.out / "conva"
    rows, dirs, selected = [], [], {}
    mid = model.cfg.n_layers // 2
    for v in config.values:
        start, n_tr, n_te = feats["spans"][v]
        x = feats["resid"][:, start:start + 2 * (n_tr + n_te)]
        vv = fit_value_vectors(x, n_tr, n_te, value=v, layers=list(range(model.cfg.n_layers)),
                               n_layers=model.cfg.n_layers, seed=config.seed,
                               meta={**artifact_model(model), "template": "raw"})
        vv.save(out / f"vectors_{v}.safetensors")
        selected[v] = {"layers": vv.selected, "rule": vv.meta["selection"]}
        rows += [{"value": v, "layer": k, "accuracy": float(a), "selected": k in vv.selected}
                 for k, a in enumerate(vv.accuracy.tolist())]
        dirs.append(vv.direction(mid))
    cos = cosine(torch.stack(dirs)[:, None], torch.stack(dirs)[None]).numpy()
    _tables(out, {"probe_accuracy": pd.DataFrame(rows)})
    _tables(out, {"cosine_matrix": pd.DataFrame(cos, index=pd.Index(config.values, name="value"),
                                                   columns=config.values)}, index=True)
    return {"selected_layers": selected, "cosine_layer": mid}


def step_neva(config: RunConfig, folder: RunFolder) -> dict:
    from mechvalue.analysis.neurons import NeuronSet, jaccard_matrix, matched_random
    from mechvalue.methods.conva import P0
    from mechvalue.methods.neva import edit_specs, fit_neuron_probes, save_probe_pushes, select_neurons

    feats = _pair_features(config, folder)
    probes = fit_neuron_probes(feats["mlp"], feats["owner"], feats["label"], feats["split"], feats["neva_layers"],
                               C=config.neva_C, seed=config.seed)
    sets = select_neurons(probes, budget=config.neva_budget)
    out = folder.out / "neva"
    rows = []
    for v, s in sets.items():
        s.save(out / f"neurons_{v}.safetensors")
        rows += [{"value": v, "layer": int(lay), "index": int(i), "score": float(sc), "sign": int(sg)}
                 for lay, i, sc, sg in zip(s.layers, s.indices, s.scores, s.signs)]
        save_probe_pushes(out / f"edit_{v}.safetensors", edit_specs(probes, s, p0=P0[v]), value=v, p0=P0[v])
        for k in range(max(1, config.study.n_controls)):  # k = 0 is the judged control arm of the study
            rnd = matched_random(s, folder.model.cfg.d_mlp, seed=config.seed + 7919 * k, exclude=s)
            rnd = NeuronSet(rnd.layers, rnd.indices, rnd.scores, rnd.signs, v, rnd.meta)
            save_probe_pushes(out / f"edit_random_{v}{'' if k == 0 else f'_{k}'}.safetensors",
                              edit_specs(probes, rnd, p0=P0[v]), value=v, p0=P0[v], control="matched_random")
    names = list(sets)
    jac = pd.DataFrame(jaccard_matrix([sets[v] for v in names]), index=pd.Index(names, name="value"), columns=names)
    acc = pd.DataFrame([{"value": v, "layer": lay, "accuracy": float(a)} for v in names
                        for lay, a in zip(probes.layers, probes.accuracy[v].tolist())])
    _tables(out, {"neurons": pd.DataFrame(rows), "probe_accuracy": acc})
    _tables(out, {"jaccard": jac}, index=True)
    return {"budget": config.neva_budget, "set_sizes": {v: len(s) for v, s in sets.items()},
            "layers": feats["neva_layers"]}


# ------------------------------------------------------------------ Dual mechanisms

def _judge_on_touche(config: RunConfig, folder: RunFolder, n: int = 300) -> pd.DataFrame | None:
    """The run's judge on a seeded sample of ``n`` Touché23-ValueEval validation arguments (per-value AUC), or
    None where the public data is not found."""
    from mechvalue.evaluate.judges import evaluate_judge_on_touche

    touche, path = folder.touche()
    if touche is None:
        return None
    sample = touche.sample(min(n, len(touche)), random_state=config.seed)
    df = evaluate_judge_on_touche(folder.judge, sample, list(config.values))
    return df.assign(source=f"{path} (validation, {len(sample)} sampled arguments)")


def step_dual(config: RunConfig, folder: RunFolder) -> dict:
    from mechvalue.methods import dual

    mmlu, _ = folder.mmlu()
    out = dual.run_dual(folder.model, folder.out / "dual", values=list(config.values), config=config.dual,
                        judge=folder.judge, mmlu=mmlu)
    structure = out.get("structure", {}) if isinstance(out, dict) else {}
    touche = _judge_on_touche(config, folder)  # next to the judge's validity on generations
    if touche is not None:
        _tables(folder.out / "dual", {"judge_touche": touche})
    info = {k: v for k, v in structure.items() if isinstance(v, (int, float, str))}
    validity = out.get("judge_validity") if isinstance(out, dict) else None
    if validity is not None:
        info["judge_flagged"] = validity.loc[validity["flagged"], "value"].tolist()
    return info


def step_compliance(config: RunConfig, folder: RunFolder) -> dict:
    """The compliance channel (:mod:`mechvalue.methods.compliance`) at the dual step's layer, from its vectors."""
    import json

    from mechvalue.methods.compliance import run_compliance
    from mechvalue.methods.dual import DualVectors

    dual = folder.out / "dual"
    vectors = DualVectors.load(dual / "vectors.safetensors", model=folder.model)
    layer = int(json.loads((dual / "dual_config.json").read_text(encoding="utf-8"))["layer"])
    li = vectors.layers.index(layer)
    deltas = vectors.prompted[:, li] - vectors.intrinsic[:, li]
    keep = [i for i in range(len(vectors.values)) if bool(torch.isfinite(deltas[i]).all())]
    if len(keep) < 2:
        raise MechvalueError(f"the compliance step needs the deltas of at least two values at layer {layer}; "
                             f"the dual step found groups for {len(keep)}")
    mmlu, _ = folder.mmlu()
    out = run_compliance(folder.model, deltas[keep], [vectors.values[i] for i in keep], layer,
                         float(vectors.meta["resid_norm"][li]), folder.out / "compliance", config.compliance,
                         mmlu=mmlu)
    v = out["verdict"]
    return {"holds": v["holds"], "parts": v["parts"], "chosen_alpha": v["chosen_alpha"], "layer": layer,
            "values": [vectors.values[i] for i in keep]}


# ------------------------------------------------------------------ steering study

def _sample(items: list, n: int, seed: int) -> list:
    """``n`` items drawn without replacement (0 or more than there are: all, in file order)."""
    return list(items) if n <= 0 or n >= len(items) else random.Random(seed).sample(items, n)


def _controls(arm: str, interventions, *, value: str, n: int, folder: RunFolder, seed: int) -> list:
    """``n`` matched random controls of one arm: NeVA's saved random-neuron edits, or ``random_like``."""
    from mechvalue.interventions.controls import random_like
    from mechvalue.methods.neva import load_probe_pushes

    if arm == "neva":
        paths = [folder.out / "neva" / f"edit_random_{value}{'' if k == 0 else f'_{k}'}.safetensors"
                 for k in range(n)]
        return [load_probe_pushes(p) for p in paths if p.exists()]
    return [random_like(list(interventions), seed=seed * 1000 + k, model=folder.model) for k in range(n)]


def step_steering(config: RunConfig, folder: RunFolder) -> dict:
    from mechvalue.data.bundled import load_dilemmas, load_portraits, load_system_prompts
    from mechvalue.data.public import format_mmlu_prompt
    from mechvalue.methods.conva import P0, ValueVectors
    from mechvalue.methods.neva import load_probe_pushes
    from mechvalue.pipeline.study import analyse, build_arms, prompt_gate, score_arm, score_control

    scfg = config.study  # StudyConfig, with the run's batch size and seed
    out = folder.out / "steering"
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(config.seed)
    mmlu, mmlu_path = folder.mmlu()
    per_target = -(-scfg.n_mmlu // len(config.values)) if mmlu else 0  # at least n_mmlu per arm in all
    rec_path, ctl_path = out / "records.jsonl", out / "controls.jsonl"
    records, controls = read_jsonl_rows(rec_path), read_jsonl_rows(ctl_path)  # resumable per (arm, target[, k])
    have = {(r["arm"], r["target"]) for r in records}
    have_ctl = {(r["arm"], r["target"]) for r in controls}
    gate_rows, sizes = [], {}
    for k, v in enumerate(config.values):
        vectors = ValueVectors.load(folder.out / "conva" / f"vectors_{v}.safetensors", model=folder.model)
        neva = folder.out / "neva"
        arms = build_arms(v, vectors=vectors, neva=load_probe_pushes(neva / f"edit_{v}.safetensors"),
                          random_neurons=load_probe_pushes(neva / f"edit_random_{v}.safetensors"), judge=folder.judge,
                          cfg=scfg, system_prompt=rng.choice(load_system_prompts(v)).text, p0=P0[v])
        pool = load_dilemmas(v)
        dilemmas = _sample(pool, scfg.n_dilemmas, config.seed + k)
        queries = [d.question for d in _sample(pool, scfg.n_queries, config.seed + 100 + k)]
        mm = mmlu[k * per_target:(k + 1) * per_target] if per_target else None
        portraits = load_portraits(v)
        sizes[v] = {"queries": len(queries), "dilemmas": len(dilemmas), "portraits": len(portraits),
                    "mmlu": len(mm or [])}
        gate = prompt_gate(folder.judge, v, scfg.gate_threshold)
        gate_rows.append({"target": v, "gate_rate_prompts": float(np.mean(gate(queries))),
                          "gate_rate_dilemmas": float(np.mean(gate([d.question for d in dilemmas]))),
                          "gate_rate_mmlu": float(np.mean(gate([format_mmlu_prompt(q) for q in mm]))) if mm
                          else float("nan")})
        for arm, (interventions, system) in arms.items():
            if (arm, v) not in have:
                print(f"  steering {v}: {arm}", flush=True)
                rec = score_arm(folder.model, arm, interventions, system, target=v, queries=queries,
                                dilemmas=dilemmas, mmlu=mm, judge=folder.judge, cfg=scfg, portraits=portraits)
                append_jsonl(rec_path, [rec])
                records.append(rec)
            if arm not in scfg.control_arms or scfg.n_controls == 0 or (arm, v) in have_ctl:
                continue
            ctl = _controls(arm, interventions, value=v, n=scfg.n_controls, folder=folder, seed=config.seed)
            print(f"  steering {v}: {len(ctl)} matched random controls of {arm}", flush=True)
            row = score_control(folder.model, arm, ctl, target=v, dilemmas=dilemmas, portraits=portraits, cfg=scfg)
            append_jsonl(ctl_path, [row])
            controls.append(row)
    validity = folder.out / "dual" / "judge_validity.csv"  # values whose judge is near-constant on generations
    flagged = (pd.read_csv(validity).query("flagged")["value"].tolist() if validity.exists() else [])
    tables = analyse(records, config.values, controls, judged_targets=[v for v in config.values if v not in flagged])
    results = tables.pop("results")
    _tables(out, {"summary": tables.pop("summary"), "radar": tables.pop("radar"), "results": results,
                  "tests": tables.pop("tests"),
                  "gate_rates": pd.DataFrame(gate_rows)})
    _tables(out, tables, index=True)
    return {"prompts": "target dilemma questions", "mmlu_source": mmlu_path, "mmlu_per_target": per_target,
            "split": "held-out: dilemmas and portrait items are never used to fit vectors or select neurons "
                     "(those use the context-controlled pairs)", "sizes": sizes,
            "n_controls": {a: scfg.n_controls for a in scfg.control_arms}, "judge_excluded": flagged,
            "judge_validity": str(validity) if validity.exists() else None, "study": dataclasses.asdict(scfg)}


# ------------------------------------------------------------------ audits, report, summary

def step_audits(config: RunConfig, folder: RunFolder) -> dict:
    from mechvalue.analysis.neurons import NeuronSet
    from mechvalue.evaluate.audit import save_audit, top_activating

    done = []
    sources = sorted((folder.out / "valuelocate").glob("neurons_*.safetensors"))[:2] + sorted(
        (folder.out / "neva").glob("neurons_*.safetensors"))[:2]
    for path in sources[:config.n_audits]:
        s = NeuronSet.load(path)
        if len(s) == 0:
            continue
        k = int(s.scores.abs().argmax())
        layer, index = int(s.layers[k]), int(s.indices[k])
        label = f"{path.parent.name} {s.name}: strongest neuron L{layer}.{index} (score {float(s.scores[k]):.3f})"
        examples = top_activating(folder.model, layer, index, k=5, batch_size=config.batch_size)
        save_audit(folder.out / "audits" / f"{path.parent.name}_{s.name}_L{layer}_{index}.json", "neuron", layer,
                   index, label, examples)
        done.append(label)
    from mechvalue.pipeline.explanations import explain_classes

    status = explain_classes(config, folder)
    return {"audits": done, "explanations": status.get("why") or f"{status.get('n_targets')} neurons explained"}


def step_report(config: RunConfig, folder: RunFolder) -> dict:
    from mechvalue.report.html import build_report

    tables = (folder.out / "steering" / "results.csv", folder.out / "valuelocate" / "causal.csv",
              folder.out / "compliance" / "results.csv")
    results = [pd.read_csv(p) for p in tables if p.exists() and p.stat().st_size > 1]
    if results:
        with atomic_path(folder.out / "results.csv") as tmp:
            pd.concat(results, ignore_index=True).to_csv(tmp, index=False)
    path = build_report(folder.out)
    return {"report": str(path)}


StepFunction = Callable[[RunConfig, RunFolder], dict]
#: every step of :data:`~mechvalue.pipeline.config.STEPS`, in order
STEP_FUNCTIONS: dict[str, StepFunction] = {"judge": step_judge, "valuelocate": step_valuelocate, "conva": step_conva,
                                           "neva": step_neva, "dual": step_dual, "compliance": step_compliance,
                                           "steering": step_steering,
                                           "circuits": step_circuits, "audits": step_audits, "report": step_report}
assert tuple(STEP_FUNCTIONS) == STEPS, "STEP_FUNCTIONS must list config.STEPS in order"


def print_summary(folder: RunFolder) -> None:
    out = folder.out
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.3f}".format):
        p = out / "valuelocate" / "fraction_vs_tau.csv"
        if p.exists():
            print("\nValueLocate: fraction of MLP neurons selected vs tau\n" + pd.read_csv(p).to_string(index=False))
        p = out / "steering" / "summary.csv"
        if p.exists():
            df = pd.read_csv(p)
            cols = [c for c in ("method", "control_success", "judged_gain", "dilemma_gain", "nlr", "perplexity",
                                "mmlu", "distinct_2") if c in df]
            print("\nSteering study (all targets pooled)\n" + df[cols].to_string(index=False))
        p = out / "dual" / "structure.json"
        if p.exists():
            print("\nDual mechanisms structure: " + p.read_text())
    print(f"\nrun folder: {out}" + (f"; report: {out / 'report.html'}" if (out / "report.html").exists() else ""))
