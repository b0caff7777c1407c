"""The main job: config parsing, and the quick run end to end on the real offline model."""

from __future__ import annotations

import dataclasses
import json
import os

import pandas as pd
import pytest

from mechvalue.core.errors import MechvalueError
from mechvalue.core.values import VALUES
from mechvalue.pipeline.config import STEPS, RunConfig


def test_config_file_fills_defaults_and_flags_win():
    cfg = RunConfig.build({"values": ["UN", "power"], "vl_tau": 0.05, "seed": 3}, {"seed": 7})
    assert cfg.values == ("universalism", "power") and cfg.vl_tau == 0.05 and cfg.seed == 7
    assert cfg.study.seed == 7 and cfg.study.batch_size == cfg.batch_size  # one seed and batch size everywhere
    quick = RunConfig.build(flags={"quick": True})
    assert quick.values == ("power", "benevolence") and quick.vl_max_questions < 40
    assert quick.study.n_queries < RunConfig.build().study.n_queries
    assert RunConfig.build(flags={"steps": "conva,report"}).steps == ("conva", "report")
    assert RunConfig.build().values == VALUES and RunConfig.build().steps == STEPS
    nested = RunConfig.build({"study": {"n_queries": 12}, "dual": {"n_queries": 5}})
    assert nested.study.n_queries == 12 and nested.dual.n_queries == 5


def test_config_is_frozen_and_round_trips_through_json():
    cfg = RunConfig.build({"values": "power,benevolence", "study": {"n_queries": 2}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3
    j = cfg.to_json()
    assert json.loads(json.dumps(j)) == j and j["values"] == ["power", "benevolence"]
    assert RunConfig.build({k: v for k, v in j.items() if k not in ("study", "dual")} | {"study": j["study"]}) == cfg


@pytest.mark.parametrize("bad, match", [({"tua": 0.1}, "unknown config keys"),
                                        ({"steps": "conva,plot"}, "unknown steps"),
                                        ({"values": "kindness"}, "kindness"),
                                        ({"batch_size": 0}, "batch_size must be at least 1"),
                                        ({"batch_size": "8"}, "'batch_size' must be an integer"),
                                        ({"vl_tau": 1.5}, r"vl_tau must be in \(0, 1\)"),
                                        ({"vl_tau": float("nan")}, "finite"),
                                        ({"vl_causal_tau": "bonferroni"}, "vl_causal_tau"),
                                        ({"dtype": "float8"}, "dtype must be one of"),
                                        ({"study": {"n_querys": 3}}, "unknown study config key 'n_querys'"),
                                        ({"study": {"n_queries": "many"}}, "'study.n_queries' must be an integer"),
                                        ({"study": 3}, "'study' must be a table")])
def test_bad_config_is_a_clear_error(bad, match):
    with pytest.raises(MechvalueError, match=match):
        RunConfig.build(bad, source="run.toml")


@pytest.mark.model
def test_quick_run_end_to_end_then_resumes(tmp_path, smollm):
    from mechvalue.cli.main import main
    from mechvalue.report.html import check_in_browser, find_chromium

    out = tmp_path / "run"
    argv = ["run", "--quick", "--values", "benevolence,power", "--out", str(out)]
    assert main(argv) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["values"] == ["benevolence", "power"] and cfg["model"]["model_id"].endswith("SmolLM2-135M-Instruct")
    assert set(cfg["versions"]) >= {"torch", "transformer-lens"} and cfg["seed"] == 0
    for step in STEPS:
        assert (out / step / "DONE.json").exists(), step
    summary = pd.read_csv(out / "steering" / "summary.csv")
    assert set(summary.method) == {"base", "prompting", "caa", "conva_nogate", "conva", "neva", "random_neurons"}
    assert summary.set_index("method").loc["base", "judged_gain"] == 0
    for name in ("valuelocate/fraction_vs_tau.csv", "conva/probe_accuracy.csv", "neva/jaccard.csv",
                 "steering/leakage_conva.csv", "dual/structure.json", "results.csv"):
        assert (out / name).stat().st_size > 0, name
    assert list(out.glob("audits/*.json")) and len(list(out.glob("figures/*.png"))) >= 8
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html and "http://" not in html.replace("http://www.w3.org", "")
    if find_chromium():
        shot = out / "report.png"
        assert check_in_browser(out / "report.html", shot) == []
        assert shot.stat().st_size > 10_000
    stamps = {s: os.stat(out / s / "DONE.json").st_mtime_ns for s in STEPS if s != "report"}
    assert main(argv) == 0  # every finished step is reused, not recomputed
    assert stamps == {s: os.stat(out / s / "DONE.json").st_mtime_ns for s in STEPS if s != "report"}
