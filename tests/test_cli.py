"""The command line: one-line errors, data check, a quick resumable run."""

from __future__ import annotations

import json

from mechvalue.cli import main


def test_unknown_value_is_a_one_line_error(capsys):
    assert main(["run", "--values", "kindness", "--out", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mechvalue: error: unknown value 'kindness'") and "\n" not in err


def test_data_check_passes(capsys):
    assert main(["data", "check"]) == 0
    assert "context_bias" in capsys.readouterr().out


def test_info(capsys):
    assert main(["info"]) == 0
    assert "transformer-lens" in capsys.readouterr().out


def test_quick_run_writes_and_reuses_its_folder(tmp_path, capsys, smollm):
    out = tmp_path / "run"
    assert main(["run", "--quick", "--values", "benevolence,power", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["values"] == ["benevolence", "power"] and cfg["model"]["model_id"].endswith("SmolLM2-135M-Instruct")
    files = sorted(p.name for p in (out / "stats").iterdir())
    assert files == ["intrinsic.safetensors", "prompted_benevolence.safetensors", "prompted_power.safetensors"]
    first = (out / "summary.csv").read_text()
    stamp = (out / "stats" / "intrinsic.safetensors").stat().st_mtime_ns
    assert main(["run", "--quick", "--values", "benevolence,power", "--out", str(out)]) == 0
    assert (out / "stats" / "intrinsic.safetensors").stat().st_mtime_ns == stamp  # reused, not recomputed
    assert (out / "summary.csv").read_text() == first
