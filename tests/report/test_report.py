"""The HTML report of a synthetic run folder, checked in a headless browser (skipped without Chromium)."""

from __future__ import annotations

import functools
import json
import re

import numpy as np
import pandas as pd
import pytest

from mechvalue.core.errors import MechvalueError
from mechvalue.core.values import VALUES
from mechvalue.report import anchors, browser
from mechvalue.report import html as report

METHODS = ("base", "prompting", "caa", "conva_nogate", "conva", "neva", "random_neurons")
DIMS = ("openness_to_change", "conservation", "self_transcendence", "self_enhancement")
N_LAYERS = 8


def _csv(path, df):
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)


def _matrix(first, rows, cols, rng, lo=-0.2, hi=0.8):
    df = pd.DataFrame(rng.uniform(lo, hi, (len(rows), len(cols))), columns=list(cols))
    df.insert(0, first, list(rows))
    return df


#: a generation with HTML in it: the report must escape it
HOSTILE = '<script>alert("x")</script> & <b>bold</b>'


def synthetic_records(values, rng, mmlu_arms=("base", "conva_nogate", "conva", "caa", "neva")):
    """Steering records as ``step_steering`` writes them; gated ConVA changes nothing (its gate stays shut)."""
    from mechvalue.methods.registry import METHOD_NAMES

    records = []
    for t in values:
        base = None
        for arm in METHOD_NAMES:
            rec = {"arm": arm, "target": t, "queries": [f"Should I {t} question {i}? {HOSTILE}" for i in range(3)],
                   "texts": [f"{arm} answer {i} about {t}. {HOSTILE if i == 0 else ''}" for i in range(3)],
                   "judged": rng.uniform(0, 1, (3, 10)).tolist(), "ppl": rng.uniform(5, 9, 3).tolist(),
                   "dilemma_pref": rng.normal(size=2).tolist(), "dilemma_win": [1.0, 0.0]}
            if arm in mmlu_arms:
                rec["mmlu"] = rng.integers(0, 2, 4).astype(float).tolist()
            if arm == "base":
                base = rec
            elif arm == "conva":  # the gate never opened: identical to base
                rec.update({k: base[k] for k in ("texts", "judged", "ppl", "dilemma_pref", "dilemma_win", "mmlu")})
            records.append(rec)
    return records


def write_steering(run_dir, values, rng):
    """records.jsonl and the tables ``study.analyse`` derives from them, written as ``step_steering`` does.

    The bootstraps run with 200 resamples instead of 2,000 (the shapes are what matters here; ten values
    take half a minute on two cores otherwise).
    """
    from unittest import mock

    from mechvalue.analysis import metrics
    from mechvalue.pipeline import study

    folder = run_dir / "steering"
    folder.mkdir(parents=True, exist_ok=True)
    records = synthetic_records(values, rng)
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    fast = functools.partial(metrics.bootstrap_ci, n_boot=200)
    with mock.patch.object(metrics, "bootstrap_ci", fast), mock.patch.object(study, "bootstrap_ci", fast):
        tables = study.analyse(records, values)
    for name in ("summary", "radar", "results"):
        tables.pop(name).to_csv(folder / f"{name}.csv", index=False)
    for name, df in tables.items():
        df.to_csv(folder / f"{name}.csv", index=True)
    pd.DataFrame({"target": values, "gate_rate_prompts": 0.0, "gate_rate_dilemmas": 0.0,
                  "gate_rate_mmlu": np.nan}).to_csv(folder / "gate_rates.csv", index=False)


STEP_SECONDS = {"judge": 6.0, "valuelocate": 30.0, "conva": 20.0, "neva": 20.0, "dual": 20.0, "steering": 25.0,
                "audits": 3.0, "report": 2.0}  # 126 s in all


def _synthetic_circuits(out, v, rng):
    """The circuits step's files for one value (shapes of mechvalue.pipeline.circuits)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"method": "atp", "component": "resid_pre", "layer": la, "position": o, "effect": rng.normal(),
             "normalized_effect": rng.normal(), "n": 4} for la in range(N_LAYERS) for o in (-3, -2, -1, 0)]
    rows += [{"method": "atp", "component": "heads", "layer": la, "head": h, "effect": rng.normal(),
              "normalized_effect": rng.normal(), "n": 4} for la in range(N_LAYERS) for h in range(4)]
    rows += [{"method": "atp", "component": "neurons", "layer": la, "neuron": n, "effect": rng.normal(),
              "normalized_effect": rng.normal(), "n": 4} for la in range(N_LAYERS) for n in range(16)]
    atp = pd.DataFrame(rows)
    _csv(out / f"atp_{v}.csv", atp)
    _csv(out / f"dla_{v}.csv", atp[atp.component != "resid_pre"].assign(method="dla"))
    _csv(out / f"exact_{v}.csv", pd.DataFrame(
        [{"method": "exact", "component": c, "layer": la, "effect": rng.normal(), "normalized_effect": rng.normal(),
          "n": 2} for c in ("attn_out", "mlp_out") for la in range(N_LAYERS)]))
    _csv(out / f"validation_summary_{v}.csv", pd.DataFrame(
        [{"group": "top", "n": 10, "spearman": 0.8, "mean_abs_error": 0.1},
         {"group": "random", "n": 10, "spearman": 0.2, "mean_abs_error": 0.05}]))
    _csv(out / f"overlap_{v}.csv", pd.DataFrame([{"set": "NeVA", "size": 5, "top_atp": 20, "overlap": 1,
                                                  "expected_by_chance": 0.8, "ratio_to_chance": 1.25}]))
    (out / f"tokens_{v}.json").write_text(json.dumps({"offsets": [-3, -2, -1], "tokens": ["?", "<|im_end|>", "\n"],
                                                      "system_prompt": "SYNTHETIC", "n_items": 4,
                                                      "alignment": "aligned (synthetic)", "source_metric": 1.5,
                                                      "target_metric": 0.5}))


def make_synthetic_run(run_dir, seed: int = 0, values=VALUES):
    """Write a clearly SYNTHETIC run folder (made-up numbers, small) with every file the report reads.

    ``values``: the run's values (any 1 to 10); the steering tables come from ``study.analyse`` on
    synthetic records, so they have the shapes a real run writes.
    """
    values = [v for v in VALUES if v in values]
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({
        "command": "run --synthetic", "model": {"model_id": "SYNTHETIC-model", "processing": "none", "n_layers": 8},
        "values": values, "seed": seed, "quick": True, "versions": {"mechvalue": "0.1.0", "torch": "x"},
        "config": {"seed": seed, "values": values, "study": {"n_queries": 3, "n_dilemmas": 2}},
        "started": "2025-01-01T00:00:00", "wall_seconds_per_step": STEP_SECONDS,
        "steps": {s: {"seconds": x} for s, x in STEP_SECONDS.items()}}))
    for step, sec in STEP_SECONDS.items():
        (run_dir / step).mkdir(exist_ok=True)
        (run_dir / step / "DONE.json").write_text(json.dumps({"step": step, "seconds": sec}))
    _csv(run_dir / "results.csv", pd.DataFrame(
        [{"method": m, "target": v, "value": v, "metric": "control_success", "estimate": rng.uniform(),
          "ci_low": 0.1, "ci_high": 0.9, "n": 20, "extra": "x"} for m in METHODS for v in values]))
    write_steering(run_dir, values, rng)
    vl = run_dir / "valuelocate"
    _csv(vl / "fraction_vs_tau.csv", pd.DataFrame({"tau": [0.01, 0.03, 0.05], "n_selected": [300, 40, 5],
                                                   "fraction": [0.02, 0.003, 0.0004]}))
    _csv(vl / "layer_counts.csv", pd.DataFrame(
        [{"set": d, "layer": la, "relative_depth": la / (N_LAYERS - 1), "count": int(rng.integers(0, 6))}
         for d in DIMS for la in range(N_LAYERS)]))
    rows = []
    for d in DIMS:
        for f in (1.0, 2.0, 4.0):
            for arm, meth in (("valuelocate", "valuelocate"), ("random#0", "random_neurons"),
                              ("random#1", "random_neurons")):
                e = 0.1 * f if meth == "valuelocate" else rng.normal(0, 0.02)
                for metric in ("delta_questionnaire", "delta_dilemma_pref"):
                    rows.append({"method": meth, "arm": arm, "target": d, "value": d, "metric": metric, "factor": f,
                                 "estimate": e, "ci_low": e - 0.05, "ci_high": e + 0.05, "n": 10, "n_neurons": 12})
    _csv(vl / "causal.csv", pd.DataFrame(rows))
    cv = run_dir / "conva"
    _csv(cv / "probe_accuracy.csv", pd.DataFrame(
        [{"value": v, "layer": la, "accuracy": 0.5 + 0.06 * la, "selected": la in (4, 5)}
         for v in values for la in range(N_LAYERS)]))
    k = len(values)
    cos = np.clip(rng.normal(0.3, 0.3, (k, k)), -1, 1)
    np.fill_diagonal(cos, 1.0)
    _csv(cv / "cosine_matrix.csv", pd.DataFrame(cos, columns=values).assign(value=values)[["value", *values]])
    nv = run_dir / "neva"
    _csv(nv / "probe_accuracy.csv", pd.DataFrame(
        [{"value": v, "layer": la, "accuracy": rng.uniform(0.6, 1.0)} for v in values for la in (3, 5)]))
    _csv(nv / "jaccard.csv", _matrix("value", values, values, rng, 0, 1))
    _csv(nv / "neurons.csv", pd.DataFrame(
        [{"value": v, "layer": int(rng.integers(0, N_LAYERS)), "index": int(rng.integers(0, 64)),
          "score": rng.uniform(), "sign": int(rng.choice([-1, 1]))} for v in values for _ in range(5)]))
    du = run_dir / "dual"
    _csv(du / "cosines.csv", pd.DataFrame(
        [{"value": v, "layer": la, "cos_intrinsic_prompted": rng.uniform(0.2, 0.9),
          "retained_norm_prompted_perp": rng.uniform(0.3, 0.7), "retained_norm_intrinsic_perp": rng.uniform(0.3, 0.7)}
         for v in values for la in range(N_LAYERS)]))
    _csv(du / "class_counts.csv", pd.DataFrame(
        [{"value": v, "layer": la, "shared": int(rng.integers(0, 9)), "intrinsic": int(rng.integers(0, 5)),
          "prompted": int(rng.integers(0, 5))} for v in values for la in (4, 5)]))
    _csv(du / "neuron_classes.csv", pd.DataFrame(
        [{"value": v, "layer": la, "neuron": i, "class": rng.choice(["shared", "intrinsic", "prompted", "unassigned"]),
          "angle": rng.uniform(0, 90), "proj_norm": rng.uniform(), "x": rng.normal(), "y": rng.normal()}
         for v in values for la in (4, 5) for i in range(8)]))
    _csv(du / "judge_validity.csv", pd.DataFrame(
        [{"value": v, "n_prompted": 12, "n_neutral": 12, "auc": rng.uniform(0.5, 1), "mean_prompted": 0.6,
          "mean_neutral": 0.3, "std": 0.2 if k else 0.01, "flagged": not k} for k, v in enumerate(values)]))
    _csv(du / "judge_touche.csv", pd.DataFrame(
        [{"value": v, "n": 300, "auc": rng.uniform(0.5, 0.7), "source": "touche (validation, 300 sampled)"}
         for v in values]))
    _csv(du / "groups.csv", pd.DataFrame(
        [{"value": v, "condition": c, "rule": "labels", "n_exp": 5, "n_unexp": 7} for v in values
         for c in ("intrinsic", "prompted")]))
    _synthetic_circuits(run_dir / "circuits", values[0], rng)
    steer = []  # shaped like mechvalue.methods.dual.causal_tests rows
    for v in values:
        def row(metric, arm, v=v, **extra):
            e = rng.uniform(0, 2)
            return {"method": "dual", "target": v, "value": v, "metric": metric, "estimate": e, "ci_low": e - 0.3,
                    "ci_high": e + 0.3, "n": 8, "arm": arm, "vector_type": None, "neuron_class": None, **extra}
        for t in ("intrinsic", "prompted", "intrinsic_perp", "prompted_perp"):
            steer += [row(m, t, vector_type=t) for m in ("delta_questionnaire", "delta_dilemma_pref", "distinct_2")]
        steer += [row("delta_questionnaire", "random_direction", vector_type="random", seed=s) for s in (0, 1)]
        steer.append(row("delta_questionnaire", "random_direction_pooled", vector_type="random"))
        for beta in (2.0, 4.0):
            steer += [row("delta_questionnaire", "neurons", neuron_class=c, beta=beta)
                      for c in ("shared", "intrinsic", "prompted")]
            steer.append(row("delta_questionnaire", "random_neurons", neuron_class="random", beta=beta, seed=0))
    _csv(du / "steering.csv", pd.DataFrame(steer))
    theta = np.deg2rad(np.array([VALUES.index(v) for v in values]) * 36.0)
    placed = k >= 3  # as dual.structure: no circumplex below 3 values (NaN coordinates)
    _csv(du / "circumplex.csv", pd.DataFrame({
        "value": values, "x": np.cos(theta + 0.2) if placed else np.nan, "y": np.sin(theta + 0.2) if placed else np.nan,
        "theory_x": np.cos(theta), "theory_y": np.sin(theta)}))
    _csv(du / "cosine_matrix.csv", pd.DataFrame(cos, columns=values).assign(value=values)[["value", *values]])
    (du / "structure.json").write_text(json.dumps(
        {"p_value": 0.01, "null_mean": 0.2, "delta_share": 0.55, "layer": 5,
         **({"r2": 0.65} if placed else {"circumplex": "skipped: fewer than 3 values"})}))
    au = run_dir / "audits"
    au.mkdir(exist_ok=True)
    (au / "STARTED.json").write_text(json.dumps({"step": "audits", "fingerprint": "x"}))  # bookkeeping, not audits
    for k, (kind, index) in enumerate((("neuron", 17), ("direction", None))):
        toks = ["I", " value", " <honesty>", " &", " care"]
        (au / f"audit_{k}.json").write_text(json.dumps({
            "kind": kind, "layer": 5, "index": index, "label": f"synthetic audit {k}",
            "examples": [{"text": "".join(toks), "tokens": toks, "acts": list(rng.normal(size=5)), "max": float(m),
                          "argmax": 2} for m in (1.0, 3.0)]}))
    (au / "explanations.json").write_text(json.dumps({"configured": False, "why": "no explainer endpoint configured"}))
    co = run_dir / "compliance"
    co.mkdir(exist_ok=True)
    res = [{"method": "compliance", "target": arm, "value": "", "metric": m, "estimate": 0.5, "ci_low": 0.4,
            "ci_high": 0.6, "n": 40, "alpha": a, "delta": d, "delta_low": d - 0.1, "delta_high": d + 0.1}
           for arm, a, d in (("base", 0.0, 0.0), ("mean_delta@0.2", 0.2, 0.2), ("random:0", 0.2, 0.0))
           for m in ("follow_all", "follow_within", "follow_beyond", "refusal_classifier", "refusal_prefix",
                     "log_ppl", "empty")]
    _csv(co / "results.csv", pd.DataFrame(res))
    _csv(co / "doses.csv", pd.DataFrame({"alpha": [0.0, 0.2], "accuracy": [0.3, 0.29], "drop": [0.0, 0.01],
                                         "passed": [True, True], "n": [100, 100]}))
    _csv(co / "bands.csv", pd.DataFrame({"instruction": ["a", "b"], "base_rate": [0.6, 0.0], "n": [16, 16],
                                         "band": ["within", "beyond"]}))
    (co / "verdict.json").write_text(json.dumps({
        "arm": "mean_delta@0.2", "holds": False, "layer": 5, "scale": 30.0, "chosen_alpha": 0.2,
        "chosen_passed_mmlu_cap": True, "n_instructions": 32, "n_refusals": 20, "bands": {"within": 1, "beyond": 1},
        "parts": {"following_within_up": True, "refusals_down": False, "no_gain_beyond": True, "above_random": True},
        "agreement": {"n": 60, "rate_a": 0.1, "rate_b": 0.5, "agreement": 0.6, "kappa": 0.2},
        "classifier_test_accuracy": 0.97, "punkt": "untrained (offline: no abbreviation list)",
        "refusal_metric": "refusal_prefix",
        "detector_audit": {d: {"balanced_accuracy": b, "accuracy": 0.8, "recall": 0.7, "precision": 0.6,
                               "predicted_rate": 0.2, "n": 100, "n_refusals": 10}
                           for d, b in (("refusal_classifier", 0.55), ("refusal_prefix", 0.81))}}))
    return run_dir


FIGURES = ["comparison_bars", "comparison_radar", "valuelocate_fraction_vs_tau", "valuelocate_layers",
           "valuelocate_causal", "conva_probe_accuracy", "conva_cosines", "leakage_conva", "leakage_neva",
           "nglr_target_group_conva", "nglr_group_group_neva", "neva_jaccard", "neva_layers", "dual_cosines",
           "dual_retained_norm", "dual_class_counts", "dual_neuron_classes", "dual_steering", "dual_neuron_scaling",
           "dual_circumplex", "dual_cosine_matrix", "neva_probe_accuracy", "compliance_deltas"]
CIRCUIT_FIGURES = ["circuits_resid_", "circuits_heads_", "circuits_neurons_", "circuits_exact_"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run = make_synthetic_run(tmp_path_factory.mktemp("run"))
    return run, report.build_report(run)


def test_report_has_all_sections_and_figures(built):
    run, path = built
    assert path == run / "report.html"
    page = path.read_text(encoding="utf-8")
    for sid in ("run", "comparison", "anchors", "valuelocate", "conva", "neva", "dual", "compliance", "circuits",
                "judges", "audits", "results"):
        assert f'id="{sid}"' in page
    assert 'class="problem"' not in page, re.findall(r'class="problem">([^<]*)', page)
    assert "not in this run" not in page
    compliance = page[page.index('id="compliance"'):page.index('id="circuits"')]
    assert "Refusal detectors against hand labels" in compliance and "criterion uses refusal_prefix" in compliance
    circuits = page[page.index('id="circuits"'):page.index('id="judges"')]
    assert "poor on the random neurons" in circuits and "ratio to chance" in circuits
    judges = page[page.index('id="judges"'):page.index('id="audits"')]
    assert "AUC on Touché" in judges and "AUC on generations" in judges and "flagged: excluded" in judges
    assert "exp_vs_intrinsic_unexp" in judges and "<td>labels</td>" in judges
    first = [v for v in VALUES][0]
    for name in FIGURES + [f + first for f in CIRCUIT_FIGURES]:
        png = run / "figures" / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG", name
        assert f'alt="{name}"' in page
    assert page.count("data:image/png;base64,") == len(list((run / "figures").glob("*.png")))
    assert "SYNTHETIC-model" in page and "2 min 6 s" in page
    assert page.count('class="card"') == 2 and "&lt;honesty&gt;" in page and "rgba(" in page
    assert page.count("outline:1px") == 4  # the argmax token of each example


def test_report_is_self_contained(built):
    page = built[1].read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.I)
    assert "<link" not in page.lower() and "@import" not in page


def test_missing_and_broken_files_give_notes(tmp_path):
    run = make_synthetic_run(tmp_path / "run")
    for rel in ("dual", "audits", "conva/cosine_matrix.csv"):
        p = run / rel
        if p.is_dir():
            for f in p.iterdir():
                f.unlink()
            p.rmdir()
        else:
            p.unlink()
    (run / "valuelocate" / "layer_counts.csv").write_text("set,layer\n")  # header only
    (run / "valuelocate" / "causal.csv").write_text("\n")  # what pandas writes for an empty frame
    (run / "conva" / "probe_accuracy.csv").write_bytes(b'value,layer\n"unclosed,1\n')  # unparseable
    (run / "steering" / "leakage_neva.csv").write_text("target,a,b\npower,1,2\n")  # wrong shape
    page = report.build_report(run).read_text(encoding="utf-8")
    assert "dual/cosines.csv: not in this run." in page and "audits/*.json: not in this run." in page
    assert "dual/judge_validity.csv: not in this run" in page
    assert '<p class="note">valuelocate/layer_counts.csv: no rows.</p>' in page
    assert '<p class="note">valuelocate/causal.csv: empty file.</p>' in page
    assert re.search(r'class="problem">could not render conva/probe_accuracy.csv: [^<]*', page)
    assert re.search(r'class="problem">could not render figure leakage_neva: leakage matrix', page)
    assert "leakage_conva" in page  # the other files still render


def test_minimal_and_absent_runs(tmp_path):
    with pytest.raises(MechvalueError, match="does not exist"):
        report.build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    page = report.build_report(tmp_path / "empty").read_text(encoding="utf-8")
    assert "config.json: not in this run." in page and "steering/summary.csv: not in this run." in page


def test_moved_names_are_reexported():
    assert report.anchor_table is anchors.anchor_table and report.ANCHORS is anchors.ANCHORS
    assert report.check_in_browser is browser.check_in_browser
    assert report.find_chromium is browser.find_chromium


# ------------------------------------------------------------------ real headless browser

needs_chromium = pytest.mark.skipif(browser.find_chromium() is None,
                                    reason="no Chromium on this machine (apt-get install chromium)")


@needs_chromium
def test_report_loads_cleanly_in_browser(built):
    run, path = built
    shot = run / "report_screenshot.png"
    errors = browser.check_in_browser(path, shot)
    assert errors == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == 1280 and height > 2000  # the full page, not just the viewport


def test_report_reads_the_study_tables(tmp_path):
    """Tables written the way ``step_steering`` writes them (``study.analyse``) render without problems."""
    from mechvalue.pipeline.study import ARMS, analyse

    rng = np.random.default_rng(1)
    targets = ["power", "benevolence", "hedonism"]  # a run on a subset of the values
    records = [{"arm": arm, "target": t, "judged": rng.uniform(0, 1, (4, 10)).tolist(),
                "dilemma_pref": rng.normal(size=3).tolist(), "dilemma_win": [1.0, 0.0, 1.0],
                "ppl": rng.uniform(5, 9, 4).tolist(), "texts": ["a synthetic text", "another synthetic one"],
                "mmlu": [1.0, 0.0, 1.0, 1.0]} for arm in ARMS for t in targets]
    tables = analyse(records, targets)
    folder = tmp_path / "run" / "steering"
    folder.mkdir(parents=True)
    for name in ("summary", "radar", "results"):
        tables.pop(name).to_csv(folder / f"{name}.csv", index=False)
    for name, df in tables.items():
        df.to_csv(folder / f"{name}.csv", index=True)
    page = report.build_report(tmp_path / "run").read_text(encoding="utf-8")
    assert 'class="problem"' not in page, re.findall(r'class="problem">([^<]*)', page)
    for name in ("comparison_bars", "comparison_radar", "leakage_neva", "nglr_target_group_conva",
                 "nglr_group_group_random_neurons"):
        assert f'alt="{name}"' in page
    table = page[page.index('id="comparison"'):page.index('id="anchors"')]
    for metric in ("control_success", "judged_gain", "dilemma_win", "perplexity", "mmlu", "nlr"):
        assert f"<th>{metric}</th>" in table
    assert re.search(r"<td>\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]</td>", table)  # estimate [CI]
