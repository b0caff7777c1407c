"""The audits step's explanations of the dual classes: over real HTTP when configured, a stated absence when not."""

from __future__ import annotations

import json

import pandas as pd
from judge_server_helpers import JudgeReply, JudgeServer

from mechvalue.pipeline.config import RunConfig
from mechvalue.pipeline.explanations import explain_classes
from mechvalue.pipeline.folder import RunFolder
from mechvalue.report.html import build_report


def _classes(run, d_mlp: int) -> None:
    rows = [("power", 1, 3, "shared", 0.9), ("power", 1, 5, "intrinsic", 0.8), ("benevolence", 2, 7, "prompted", 0.7),
            ("benevolence", 1, 3, "shared", 0.6), ("power", 2, min(9, d_mlp - 1), "unassigned", 0.5)]
    (run / "dual").mkdir(parents=True)
    pd.DataFrame(rows, columns=["value", "layer", "neuron", "class", "proj_norm"]).to_csv(
        run / "dual" / "neuron_classes.csv", index=False)


def _respond(body: dict) -> JudgeReply:
    prompt = body["messages"][0]["content"]
    if "\t" in prompt and "<start>" in prompt:  # an explanation prompt shows token<TAB>activation examples
        return JudgeReply("common function words.")
    return JudgeReply("nothing to add")  # a simulation reply without numbers: the neuron scores NaN, with a note


def test_explanations_when_configured_and_a_note_when_not(tiny_model, tmp_path):
    run = tmp_path / "run"
    _classes(run, tiny_model.cfg.d_mlp)
    folder = RunFolder(RunConfig.build({"out": str(run), "explain_top": 2, "explain_random": 2}))
    folder._model = tiny_model
    status = explain_classes(folder.config, folder)
    assert status == json.loads((run / "audits" / "explanations.json").read_text())
    assert not status["configured"] and "explain_base_url" in status["why"]
    build_report(run)
    assert "no explainer endpoint configured" in (run / "report.html").read_text()
    with JudgeServer(_respond) as server:
        cfg = RunConfig.build({"out": str(run), "explain_top": 2, "explain_random": 2,
                               "explain_base_url": server.base_url, "explain_model": "fake"})
        folder = RunFolder(cfg)
        folder._model = tiny_model
        status = explain_classes(cfg, folder)
        assert status["configured"] and status["n_targets"] == 3 and status["n_random"] == 2
        assert status["requests"] == len(server.requests) > 0
    df = pd.read_csv(run / "audits" / "explanations.csv")
    assert df["class"].tolist()[:3] == ["shared", "intrinsic", "prompted"] and (df["class"][3:] == "random").all()
    assert set(status["by_class"]) == {"shared", "intrinsic", "prompted"}
    build_report(run)
    html = (run / "report.html").read_text()
    assert "Neuron explanations (dual classes)" in html and "Explainer fake" in html
