"""``mechvalue patch`` and ``mechvalue attribute`` on a tiny model (offline, the bundled dilemmas)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import mechvalue.lm.models
from mechvalue.cli.main import main


def test_patch_mlp_prints_the_top_layers_and_writes_the_csv(tiny, tmp_path, capsys, one_thread):
    out = tmp_path / "p.csv"
    assert main(["patch", "--value", "benevolence", "--component", "mlp", "--max-items", "3", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    df = pd.read_csv(out)
    assert len(df) == tiny.cfg.n_layers and set(df.component) == {"mlp_out"} and (df.n == 3).all()
    assert "patching mlp from prompted into base" in cap.out and "normalized_effect" in cap.out
    assert "shared prompt tokens" in cap.err  # the alignment is stated


def test_patch_resid_is_layer_by_position(tiny, tmp_path, one_thread):
    out = tmp_path / "r.csv"
    assert main(["patch", "--value", "power", "--component", "resid", "--layers", "0,3", "--max-items", "2",
                 "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert set(df.layer) == {0, 3} and df.position.max() == 0 and df.position.min() < -3


def test_attribute_atp_with_validation_and_dla(tiny, tmp_path, capsys, one_thread):
    out = tmp_path / "a.csv"
    assert main(["attribute", "--value", "benevolence", "--method", "atp", "--validate", "5", "--max-items", "2",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Spearman" in text and (tmp_path / "a.validation.csv").exists()
    df = pd.read_csv(out)
    assert set(df.component) == {"neurons", "heads"} and len(df[df.component == "neurons"]) == tiny.cfg.n_layers * 48
    assert main(["attribute", "--value", "benevolence", "--method", "dla", "--max-items", "2", "--json",
                 "--out", str(tmp_path / "d.csv")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["top"]) == 15 and data["top"][0]["method"] == "dla"


@pytest.mark.parametrize(("argv", "message"), [
    (["patch", "--value", "BE", "--source", "base", "--target", "base", "--out", "x.csv"], "nothing to patch"),
    (["patch", "--value", "kindness", "--out", "x.csv"], "unknown value 'kindness'"),
    (["attribute", "--value", "BE", "--top", "0", "--out", "x.csv"], "--top must be >= 1"),
    (["patch", "--value", "BE", "--component", "cats", "--out", "x.csv"], "invalid choice: 'cats'"),
])
def test_bad_circuit_input_is_a_usage_error(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(mechvalue.lm.models, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "\n" not in err.strip()
