"""The main job: config parsing, and the quick run end to end on the real offline model."""

from __future__ import annotations

import argparse
import json
import os

import pandas as pd
import pytest

from mechvalue.errors import MechvalueError
from mechvalue.run import STEPS, RunConfig


def _args(**kw):
    base = dict(model=None, values=None, device=None, dtype=None, out=None, seed=None, quick=False, batch_size=None,
                steps=None, config={})
    return argparse.Namespace(**{**base, **kw})


def test_config_file_fills_defaults_and_flags_win():
    cfg = RunConfig.from_args(_args(config={"values": ["UN", "power"], "vl_tau": 0.05, "seed": 3}, seed=7))
    assert cfg.values == ["universalism", "power"] and cfg.vl_tau == 0.05 and cfg.seed == 7
    quick = RunConfig.from_args(_args(quick=True))
    assert quick.values == ["power", "benevolence"] and quick.vl_max_questions < 40
    assert RunConfig.from_args(_args(steps="conva,report")).steps == ["conva", "report"]
    assert RunConfig.from_args(_args()).values is not None and len(RunConfig.from_args(_args()).values) == 10


@pytest.mark.parametrize("bad, match", [({"config": {"tua": 0.1}}, "unknown config keys"),
                                        ({"steps": "conva,plot"}, "unknown steps"),
                                        ({"values": "kindness"}, "kindness")])
def test_bad_config_is_a_clear_error(bad, match):
    with pytest.raises(MechvalueError, match=match):
        RunConfig.from_args(_args(**bad))


@pytest.mark.model
def test_quick_run_end_to_end_then_resumes(tmp_path, smollm):
    from mechvalue.cli import main
    from mechvalue.report import check_in_browser, find_chromium

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
