"""What the command line prints: aligned tables with 3 significant digits, ``--json`` documents with the same
numbers, ValueLocate's chance level, and what the first and later ``steer`` say about the vector cache."""

from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest

from mechvalue.cli.main import main
from mechvalue.cli.tables import merge_ci, sig, table

DECIMAL = re.compile(r"(?<![\d.])-?\d+\.\d+(?![\d.])")  # not versions (2.13.0) or dates


def too_precise(text: str) -> list[str]:
    """Decimal numbers in ``text`` with more than 3 significant digits (a 16-digit float, ...)."""
    return [m for m in DECIMAL.findall(text) if len(m.lstrip("-").replace(".", "").lstrip("0")) > 3]


@pytest.mark.parametrize(("x", "text"), [
    (0.16666666666666666, "0.167"), (2.16573433081309, "2.17"), (46.40373229980469, "46.4"),
    (0.0026041666666666665, "0.00260"), (0.9996, "1.00"), (-1.8497533798217773, "-1.85"),
    (123456.7, "123000"), (2.5e-05, "2.50e-05"), (0.0, "0"), (float("nan"), "–"),
])
def test_three_significant_digits(x, text):
    assert sig(x) == text


def test_exact_values_keep_their_short_form_and_tables_align():
    out = table(["tau", "fraction", "null_fraction"], [[0.01, 0.9153645833333334, 0.8861653645833333],
                                                      [0.15, 0.013172743055555556, 0.0026041666666666665]])
    lines = out.splitlines()
    assert lines[1].split() == ["0.01", "0.915", "0.886"] and lines[2].split() == ["0.15", "0.0132", "0.00260"]
    assert len({len(line) for line in lines}) == 1  # numbers right-aligned under their headers
    cols, rows = merge_ci(["m", "x", "x_ci_low", "x_ci_high"], [["a", 0.5, 0.25, 0.75123]])
    assert cols == ["m", "x [95% CI]"] and table(cols, rows).splitlines()[1].split(None, 1)[1] == "0.5 [0.25, 0.751]"


def test_wide_tables_split_into_blocks_that_repeat_the_row_labels():
    cols = ["method"] + [f"metric_{i}" for i in range(12)]
    out = table(cols, [["conva"] + [0.123456] * 12, ["base"] + [1.0] * 12], width=80)
    blocks = out.split("\n\n")
    assert len(blocks) > 1 and all(b.lstrip().startswith("method") for b in blocks)
    assert all(len(line) <= 80 for line in out.splitlines())


# ---------------------------------------------------------------- show


def _synthetic_run(tmp_path, *, new: bool = True):
    run = tmp_path / "run"
    for sub in ("steering", "valuelocate", "dual", "conva", "judge"):
        (run / sub).mkdir(parents=True)
    config = {"seed": 0, "quick": True, "values": ["power", "benevolence"], "vl_tau": 0.03,
              "neva_budget": 0.0010000000000000002, "steps": ["judge", "valuelocate", "conva", "steering", "audits"],
              "study": {"n_queries": 3, "gate_threshold": 0.49999999999999994, "mmlu_arms": ["base", "conva"]}}
    record = {"command": "run", "config": config, "values": ["power", "benevolence"], "seed": 0, "quick": True,
              "started": "2026-12-04T04:16:57",
              "model": {"model_id": "tiny-model", "n_layers": 4, "d_model": 32, "d_mlp": 48, "dtype": "float32",
                        "processing": {"fold_ln": False}},
              "versions": {"mechvalue": "0.1.0", "torch": "2.13.0"}, "wall_seconds_last_invocation": 321.123456789}
    if new:
        seconds = {"judge": 1.23456789, "valuelocate": 148.333333333, "conva": 42.4, "steering": 600.04}
        record["steps"] = {s: {"fingerprint": "abc", "seconds": t, "config": {}} for s, t in seconds.items()}
        record["wall_seconds_per_step"] = seconds
    else:  # an older folder: the wall time is only in each step's DONE.json
        for s, t in {"judge": 1.23456789, "valuelocate": 148.333333333, "conva": 42.4}.items():
            (run / s).mkdir(exist_ok=True)
            (run / s / "DONE.json").write_text(json.dumps({"step": s, "seconds": t}))
    if new:
        for s in ("judge", "valuelocate", "conva", "steering"):
            (run / s / "DONE.json").write_text(json.dumps({"step": s, "seconds": 1.0}))
    (run / "config.json").write_text(json.dumps(record, indent=2))
    pd.DataFrame({
        "method": ["base", "prompting", "conva"],
        "control_success": [0.0, 0.16666666666666666, 0.3333333333333333],
        "control_success_ci_low": [0.0, 0.0, 0.08333333333333333],
        "control_success_ci_high": [0.0, 0.5, 0.6666666666666666],
        "perplexity": [2.16573433081309, 2.2708536187807717, 2.2881292700767517],
        "perplexity_ci_low": [1.9984993139902751, 2.013701339562734, 1.9713618954022725],
        "perplexity_ci_high": [2.354154586791992, 2.566174785296122, 2.701291481653849],
        "nlr": [float("nan"), 0.36283743988410905, 0.04548230772068001],
    }).to_csv(run / "steering" / "summary.csv", index=False)
    pd.DataFrame({"tau": [0.01, 0.03, 0.15], "n_selected": [42180, 29313, 607],
                  "fraction": [0.9153645833333334, 0.6361328125, 0.013172743055555556],
                  "null_fraction": [0.8861653645833333, 0.5244140625, 0.0026041666666666665]}).to_csv(
        run / "valuelocate" / "fraction_vs_tau.csv", index=False)
    (run / "dual" / "structure.json").write_text(json.dumps({
        "delta_share": 0.5311557650566101, "delta_share_chance": 0.5, "layer": 15,
        "delta_share_by_layer": {str(i): 0.5 + i / 300 for i in range(30)}, "circumplex": "skipped: few values"}))
    return run


def _table_block(out: str, title: str) -> list[str]:
    block = out.split(title, 1)[1].split("\n\n", 1)[0]
    return block.splitlines()[1:]


def test_show_prints_aligned_tables_with_three_significant_digits(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    run = _synthetic_run(tmp_path)
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert not too_precise(out), too_precise(out)
    # the config in a few key=value lines, nested sections on their own line
    assert "neva_budget=0.001" in out and "vl_tau=0.03" in out and "values=[power, benevolence]" in out
    assert re.search(r"^  study: n_queries=3  gate_threshold=0.5  mmlu_arms=\[base, conva\]$", out, re.M)
    # steps: status and wall time from config.json
    assert re.search(r"^  judge +done +1\.2 s$", out, re.M)
    assert re.search(r"^  valuelocate +done +2 min 28 s$", out, re.M)
    assert re.search(r"^  steering +done +10 min 00 s$", out, re.M) and re.search(r"^  audits +not run", out, re.M)
    assert re.search(r"^  neva +not requested", out, re.M) and re.search(r"^  dual +unfinished", out, re.M)
    # steering summary: estimate [CI] per metric, right-aligned
    rows = _table_block(out, "steering/summary.csv")
    assert rows[0].split() == ["method", "control_success", "[95%", "CI]", "perplexity", "[95%", "CI]", "nlr"]
    assert rows[2].split() == ["prompting", "0.167", "[0,", "0.5]", "2.27", "[2.01,", "2.57]", "0.363"]
    assert rows[3].split() == ["conva", "0.333", "[0.0833,", "0.667]", "2.29", "[1.97,", "2.70]", "0.0455"]
    assert rows[1].split()[-1] == "–"  # NaN
    assert len({len(r) for r in rows}) == 1
    # ValueLocate: the chance column beside the fraction
    rows = _table_block(out, "valuelocate/fraction_vs_tau.csv")
    assert "chance level" in out.split("valuelocate/fraction_vs_tau.csv", 1)[1].splitlines()[0]
    assert [r.split() for r in rows] == [["tau", "n_selected", "fraction", "null_fraction"],
                                         ["0.01", "42180", "0.915", "0.886"], ["0.03", "29313", "0.636", "0.524"],
                                         ["0.15", "607", "0.0132", "0.00260"]]
    assert len({len(r) for r in rows}) == 1
    assert re.search(r"^  delta_share +0\.531$", out, re.M) and "0: 0.5, 1: 0.503," in out


def test_show_json_holds_the_same_numbers(tmp_path, capsys):
    run = _synthetic_run(tmp_path)
    assert main(["show", str(run)]) == 0
    text = capsys.readouterr().out
    assert main(["show", "--json", str(run)]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # one JSON document, nothing else on stdout
    assert captured.err == ""
    steer = pd.read_csv(run / "steering" / "summary.csv")
    rows = data["tables"]["steering/summary.csv"]
    assert [r["method"] for r in rows] == ["base", "prompting", "conva"]
    for r, (_, ref) in zip(rows, steer.iterrows()):
        assert r["perplexity"] == ref.perplexity and r["control_success_ci_high"] == ref.control_success_ci_high
        assert sig(r["perplexity"]) in text
    assert rows[0]["nlr"] is None  # NaN -> null
    vl = data["tables"]["valuelocate/fraction_vs_tau.csv"]
    assert vl[2] == {"tau": 0.15, "n_selected": 607, "fraction": 0.013172743055555556,
                     "null_fraction": 0.0026041666666666665}
    assert data["tables"]["dual/structure.json"]["delta_share"] == 0.5311557650566101
    assert data["config"]["config"]["neva_budget"] == 0.0010000000000000002
    steps = {s["step"]: s for s in data["steps"]}
    assert steps["valuelocate"] == {"step": "valuelocate", "status": "done", "seconds": 148.333333333}
    assert steps["audits"]["status"] == "not run" and steps["audits"]["seconds"] is None


def test_show_old_run_folder_without_step_records(tmp_path, capsys):
    run = _synthetic_run(tmp_path, new=False)
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  valuelocate +done +2 min 28 s$", out, re.M) and re.search(r"^  conva +done +42 s$", out, re.M)
    assert re.search(r"^  dual +unfinished", out, re.M)  # a folder without DONE.json
    assert not too_precise(out)


def test_errors_stay_one_line_with_json(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    (tmp_path / "run" / "steering").mkdir()
    (tmp_path / "run" / "steering" / "summary.csv").write_bytes(b"a,b\n1,2,3\n")
    assert main(["show", "--json", str(tmp_path / "run")]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and err.startswith("mechvalue: error:") and "\n" not in err
    assert "summary.csv: not a readable CSV table" in err
    assert main(["locate", "--json", "--tau", "nan"]) == 2
    assert "--tau must be a finite number" in capsys.readouterr().err


# ---------------------------------------------------------------- commands on a tiny model






def test_locate_prints_the_chance_level(tiny, tmp_path, capsys, one_thread):
    argv = ["locate", "--max-questions", "4", "--tau", "0.04", "--out", str(tmp_path / "vl")]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = captured.out
    curve = pd.read_csv(tmp_path / "vl" / "fraction_vs_tau.csv")
    at = curve[curve.tau == 0.04].iloc[0]
    assert f"selected {sig(100 * at.fraction)}% of {8 * 48} MLP neurons; chance level {sig(100 * at.null_fraction)}%" \
        in out
    assert "chance" in out.split("vs tau", 1)[1].splitlines()[1]  # the column beside each fraction
    for _, r in curve.iterrows():
        assert re.search(rf"^ +{re.escape(sig(r.tau, strip='exact'))} .*{re.escape(sig(r.fraction, strip='exact'))} +"
                         rf"{re.escape(sig(r.null_fraction, strip='exact'))}$", out, re.M), (r, out)
    assert not too_precise(out)
    assert "locating value neurons" in captured.err and "it/s" not in out  # the bar is on stderr
    assert main(argv + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["chance_fraction"] == pytest.approx(at.null_fraction) and data["fraction"] == pytest.approx(at.fraction)
    assert [r["tau"] for r in data["fraction_vs_tau"]] == list(curve.tau)


def test_steer_says_it_trains_once_then_reuses_the_cache(tiny, tmp_path, capsys, one_thread):
    cache = tmp_path / "vecs"
    argv = ["steer", "--value", "benevolence", "--method", "caa", "--layers", "1", "--cache-dir", str(cache),
            "--max-new-tokens", "2", "--layout", "rows", "Hello there"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    path = next(cache.rglob("benevolence.safetensors"))
    first = next(line for line in err.splitlines() if "training benevolence probe vectors once" in line)
    assert f"cached at {path}" in first and re.search(r"about \d+ (s|min) here", first)
    assert err.index("training benevolence probe vectors once") < err.index("training benevolence vectors")  # bar
    assert "loaded SmolLM2" in err
    assert main(argv + ["--json"]) == 0
    captured = capsys.readouterr()
    assert f"reusing the benevolence probe vectors cached at {path}" in captured.err
    assert "training" not in captured.err
    data = json.loads(captured.out)
    assert data["value"] == "benevolence" and data["method"] == "caa" and isinstance(data["steered"], str)


def test_evaluate_table_and_json(tiny, capsys, one_thread):
    argv = ["evaluate", "--value", "power", "--method", "prompt", "--max-items", "4"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "evaluating power (prompt)" in captured.err and "16/16" in captured.err
    assert not too_precise(captured.out)
    assert main(argv + ["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["metric"] for r in rows] == ["questionnaire (1-6)", "dilemma preference (nats)", "dilemma win share"]
    q = rows[0]
    assert f"{sig(q['delta'], strip='exact')} [{sig(q['delta_ci_low'], strip='exact')}" in captured.out
    assert all(math.isfinite(r["base"]) and r["n"] == 4 for r in rows)


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    assert "transformer-lens" in json.loads(capsys.readouterr().out)["versions"]


def test_run_json_prints_the_finished_folder(tmp_path, capsys, monkeypatch):
    import mechvalue.pipeline.run

    run = _synthetic_run(tmp_path)

    def fake_run_main(config, force=()):
        print("[conva] running ...")  # the steps' lines must not spoil the JSON on stdout
        return run
    monkeypatch.setattr(mechvalue.pipeline.run, "run_main", fake_run_main)
    assert main(["run", "--json", "--out", str(run)]) == 0
    captured = capsys.readouterr()
    assert "[conva] running ..." in captured.err
    data = json.loads(captured.out)
    assert data["run"] == str(run) and data["tables"]["valuelocate/fraction_vs_tau.csv"][0]["tau"] == 0.01


def test_steer_neva_says_it_fits_once_for_all_values(tiny, tmp_path, capsys, monkeypatch, one_thread):
    import torch

    import mechvalue.methods.neva as neva
    from mechvalue.interventions.install import ProbePush

    spec = ProbePush("blocks.2.mlp.hook_post", torch.tensor([1.0, -2.0]), 0.25, 0.0, indices=torch.tensor([1, 4]),
                     mean=torch.zeros(2), scale=torch.ones(2))
    monkeypatch.setattr(neva, "train_neuron_probes", lambda *a, **k: "probes")
    monkeypatch.setattr(neva, "select_neurons", lambda probes: {"power": "n", "tradition": "n"})
    monkeypatch.setattr(neva, "edit_specs", lambda probes, neurons, p0: [spec])
    argv = ["steer", "--method", "neva", "--cache-dir", str(tmp_path / "c"), "--max-new-tokens", "2", "hi"]
    assert main(argv + ["--value", "power"]) == 0
    err = capsys.readouterr().err
    assert "fitting NeVA neuron probes once for all values" in err and "later runs reuse them" in err
    assert main(argv + ["--value", "tradition"]) == 0  # fitted with power's: reused
    assert "reusing the NeVA edit of tradition cached at" in capsys.readouterr().err
