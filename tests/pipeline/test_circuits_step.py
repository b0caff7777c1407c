"""The main job's circuits step on a tiny model, and its report section."""

from __future__ import annotations

import json

import pandas as pd

from mechvalue.pipeline.circuits import overlap_table, step_circuits
from mechvalue.pipeline.config import RunConfig
from mechvalue.pipeline.folder import RunFolder
from mechvalue.report.html import build_report


def test_circuits_step_writes_every_table_and_the_report_section(tiny_model, tmp_path, one_thread):
    cfg = RunConfig.build(flags={"out": str(tmp_path / "run"), "circuit_items": 3, "circuit_exact_items": 2,
                                 "circuit_validate": 4, "circuit_values": "power"})
    folder = RunFolder(cfg)
    folder._model = tiny_model
    info = step_circuits(cfg, folder)
    out = tmp_path / "run" / "circuits"
    for name in ("atp", "dla", "exact", "validation", "validation_summary", "overlap"):
        assert (out / f"{name}_power.csv").exists(), name
    views = json.loads((out / "token_views_power.json").read_text())
    assert len(views) == 5 and len(views[0]["source_tokens"]) == len(views[0]["source_acts"])
    atp = pd.read_csv(out / "atp_power.csv")
    assert set(atp.component) == {"neurons", "heads", "resid_pre"} and (atp.n == 3).all()
    exact = pd.read_csv(out / "exact_power.csv")
    assert set(exact.component) == {"attn_out", "mlp_out"} and (exact.n == 2).all()
    tokens = json.loads((out / "tokens_power.json").read_text())
    assert len(tokens["tokens"]) == len(tokens["offsets"]) and tokens["n_items"] == 3
    assert info["values"] == ["power"] and info["per_value"]["power"]["items"] == 3
    page = build_report(tmp_path / "run").read_text(encoding="utf-8")
    part = page[page.index('id="circuits"'):page.index('id="judges"')]
    assert "circuits_resid_power" in part and "circuits_exact_power" in part and "Spearman" in part
    assert part.count("<details>") == 5 and 'class="tok"' in part


def test_overlap_against_chance():
    atp = pd.DataFrame({"component": ["neurons"] * 4, "layer": [0, 0, 1, 1], "neuron": [0, 1, 0, 1],
                        "effect": [5.0, -4.0, 0.1, 0.0]})
    df = overlap_table(atp, {"A": {(0, 0), (1, 1)}, "empty": set()}, n_neurons=4, top=2).set_index("set")
    assert df.loc["A", "overlap"] == 1 and df.loc["A", "expected_by_chance"] == 1.0
    assert df.loc["A", "ratio_to_chance"] == 1.0 and df.loc["empty", "overlap"] == 0
