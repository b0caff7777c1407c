"""The command line: one-line errors, --help examples, config files, each command on a tiny model."""

from __future__ import annotations

import json
import re

import gguf
import numpy as np
import pandas as pd
import pytest
import torch

from mechvalue.cli.commands import side_by_side
from mechvalue.cli.main import main
from mechvalue.methods.conva import ValueVectors
from mechvalue.pipeline.config import STEPS


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


# ---------------------------------------------------------------- new commands

COMMANDS = ["run", "locate", "extract", "steer", "evaluate", "judge", "patch", "attribute", "audit", "show", "export",
            "data", "info"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_shows_examples(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"mechvalue {command}" in out.split("examples:")[1]







def _bad_files(tmp_path):
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00garbage" * 10)
    (tmp_path / "bad.toml").write_text("seed = = 3\n")
    (tmp_path / "types.json").write_text('{"seed": "three"}')
    (tmp_path / "empty").mkdir()
    return tmp_path


BAD = [  # (argv, message, exit status: 2 = usage error, nothing ran; 1 = runtime error)
    (["steer", "--value", "kindness", "hi"], "unknown value 'kindness'", 2),
    (["steer", "--value", "BE", "--vectors", "{t}/missing.safetensors", "hi"], "no such file", 1),
    (["steer", "--value", "BE", "--vectors", "{t}/corrupt.safetensors", "hi"], "not a readable safetensors", 1),
    (["steer", "--value", "BE"], "required: prompt", 2),
    (["steer", "--value", "BE", "--layers", "a,b", "hi"], "comma-separated integers", 2),
    (["steer", "--value", "BE", "--coefficient", "nan", "hi"], "--coefficient must be a finite number, got nan", 2),
    (["steer", "--value", "BE", "--p0", "inf", "hi"], "--p0 must be a finite number, got inf", 2),
    (["steer", "--value", "BE", "--p0", "1.5", "hi"], "--p0 must be in (0.0, 1.0), got 1.5", 2),
    (["steer", "--value", "BE", "--temperature", "-1", "hi"], "--temperature must be >= 0.0, got -1.0", 2),
    (["steer", "--value", "BE", "--max-new-tokens", "0", "hi"], "--max-new-tokens must be >= 1, got 0", 2),
    (["steer", "--value", "BE", "--batch-size", "0", "hi"], "--batch-size must be >= 1, got 0", 2),
    (["evaluate", "--value", "kindness"], "unknown value", 2),
    (["extract", "--value", "kindness"], "unknown value", 2),
    (["locate", "--tau", "2"], "--tau must be in (0.0, 1.0), got 2.0", 2),
    (["locate", "--tau", "0"], "--tau must be in (0.0, 1.0), got 0.0", 2),
    (["locate", "--tau", "abc"], "invalid float value: 'abc'", 2),
    (["locate", "--max-questions", "0"], "--max-questions must be >= 1", 2),
    (["evaluate", "--value", "BE", "--max-items", "1"], "--max-items must be >= 2", 2),
    (["run", "--steps", "conva,foo"], "unknown steps ['foo']", 2),
    (["run", "--force-step", "plot"], "--force-step ['plot']: unknown step", 2),
    (["run", "--seed", "-1"], "--seed must be >= 0, got -1", 2),
    (["run", "--config", "{t}/bad.toml"], "not valid TOML", 2),
    (["run", "--config", "{t}/types.json"], "'seed' must be an integer, got 'three'", 2),
    (["run", "--config", "{t}/none.toml"], "no such config file", 2),
    (["audit", "--layer", "1", "--neuron", "2", "--texts", "{t}/none.txt"], "no such text file", 1),
    (["audit", "--layer", "-1", "--neuron", "2"], "--layer must be >= 0, got -1", 2),
    (["show", "{t}/empty"], "no config.json", 1),
    (["show", "{t}/nowhere"], "no such run folder", 1),
    (["export", "--vectors", "{t}/missing.safetensors", "--out", "{t}/x.gguf"], "no such file", 1),
    (["export", "--vectors", "{t}/corrupt.safetensors", "--out", "{t}/x.gguf"], "not a readable safetensors", 1),
    (["export", "--vectors", "{t}/missing.safetensors", "--scale", "nan", "--out", "{t}/x.gguf"],
     "--scale must be a finite number", 2),
    (["export", "--run", "{t}/empty", "--out", "{t}/x.gguf"], "--run needs --value", 2),
    (["export", "--run", "{t}/empty", "--value", "BE", "--out", "{t}/x.gguf"], "holds no ConVA vectors", 1),
    (["export", "--out", "{t}/x.gguf"], "one of the arguments --vectors --run is required", 2),
    (["frobnicate"], "invalid choice: 'frobnicate'", 2),
]


@pytest.mark.parametrize(("argv", "message", "status"), BAD, ids=[" ".join(a[:4]) for a, _, _ in BAD])
def test_bad_input_is_a_one_line_error(argv, message, status, tmp_path, capsys, no_model):
    t = _bad_files(tmp_path)
    assert main([a.replace("{t}", str(t)) for a in argv]) == status
    err = capsys.readouterr().err.strip()
    assert err.startswith("mechvalue: error:") and "\n" not in err and message in err, err


def test_run_config_fills_defaults_and_flags_win(tmp_path, monkeypatch, no_model):
    import mechvalue.pipeline.run

    seen = {}
    monkeypatch.setattr(mechvalue.pipeline.run, "run_main",
                        lambda config, force=(): seen.update(config=config, force=force))
    cfg = tmp_path / "run.toml"
    cfg.write_text('seed = 3\nbatch-size = 4\nvalues = ["benevolence", "power"]\nquick = true\n'
                   'steps = "conva"\n[study]\nn_queries = 5\n')
    assert main(["run", "--config", str(cfg), "--seed", "5", "--steps", "conva,steering"]) == 0
    c = seen["config"]
    assert c.seed == 5 and c.batch_size == 4 and c.values == ("benevolence", "power")
    assert c.quick is True and c.steps == ("conva", "steering") and c.study.n_queries == 5 and c.study.seed == 5
    (tmp_path / "run.json").write_text('{"out": "runs/x", "steps": ["report"], "model": "m.gguf"}')
    assert main(["run", "--config", str(tmp_path / "run.json")]) == 0
    c = seen["config"]
    assert c.out == "runs/x" and c.steps == ("report",) and c.model == "m.gguf"
    assert main(["run", "--out", "o"]) == 0
    c = seen["config"]
    assert c.out == "o" and c.seed == 0 and c.dtype == "float32" and c.steps == STEPS


def test_side_by_side_layouts():
    wide = side_by_side(("base", "one two three"), ("steered", "four\nfive"), 120)
    assert wide.splitlines()[0].startswith("base") and " | steered" in wide.splitlines()[0]
    narrow = side_by_side(("base", "one"), ("steered", "two"), 80)
    assert narrow == "== base ==\none\n\n== steered ==\ntwo"


def test_steer_prints_both_texts(tiny, capsys, monkeypatch, one_thread):
    argv = ["steer", "--value", "benevolence", "--method", "prompt", "--max-new-tokens", "3", "Plan my weekend."]
    assert main(argv + ["--layout", "rows"]) == 0
    out = capsys.readouterr().out
    assert "== base ==" in out and "== steered: benevolence (prompt) ==" in out
    monkeypatch.setenv("COLUMNS", "150")
    assert main(argv) == 0
    assert " | steered: benevolence (prompt)" in capsys.readouterr().out.splitlines()[0]


def test_steer_trains_caches_and_reuses_vectors(tiny, tmp_path, capsys, one_thread):
    cache = tmp_path / "vecs"
    argv = ["steer", "--value", "BE", "--method", "caa", "--layers", "1", "--cache-dir", str(cache),
            "--max-new-tokens", "2", "--layout", "rows", "Hello there"]
    assert main(argv) == 0
    files = list(cache.rglob("benevolence.safetensors"))
    assert len(files) == 1 and "training benevolence" in capsys.readouterr().err
    stamp = files[0].stat().st_mtime_ns
    assert main(argv[:4] + ["conva"] + argv[5:]) == 0
    assert files[0].stat().st_mtime_ns == stamp and "training" not in capsys.readouterr().err
    assert main(["steer", "--value", "power", "--vectors", str(files[0]), "hi"]) == 2  # another value's vectors
    assert "holds benevolence vectors, not power" in capsys.readouterr().err


def test_steer_neva_fits_once_then_uses_the_cache(tiny, tmp_path, capsys, monkeypatch, one_thread):
    import mechvalue.methods.neva as neva
    from mechvalue.interventions.install import ProbePush

    calls = []
    spec = ProbePush("blocks.2.mlp.hook_post", torch.tensor([1.0, -2.0, 0.5]), 0.25, 0.0,
                     indices=torch.tensor([1, 4, 7]), mean=torch.zeros(3), scale=torch.ones(3))
    monkeypatch.setattr(neva, "train_neuron_probes", lambda *a, **k: calls.append(1) or "probes")
    monkeypatch.setattr(neva, "select_neurons", lambda probes: {"power": "neurons"})
    monkeypatch.setattr(neva, "edit_specs", lambda probes, neurons, p0: [spec])
    argv = ["steer", "--value", "power", "--method", "neva", "--cache-dir", str(tmp_path / "c"),
            "--max-new-tokens", "2", "--layout", "rows", "hi"]
    assert main(argv) == 0 and main(argv + ["--p0", "0.8"]) == 0
    assert calls == [1] and "steered: power (neva)" in capsys.readouterr().out
    assert main(argv + ["--p0", "1.5"]) == 2 and "--p0 must be in (0.0, 1.0)" in capsys.readouterr().err


def test_extract_on_tiny(tiny, tmp_path, capsys, one_thread):
    assert main(["extract", "--value", "power", "--out", str(tmp_path / "p.safetensors")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ +7 +[0-9.]+", out, re.M) and "selected layers" in out and (tmp_path / "p.safetensors").exists()


def test_locate_on_tiny(tiny, tmp_path, capsys, one_thread):
    assert main(["locate", "--max-questions", "2", "--tau", "0.2", "--out", str(tmp_path / "vl")]) == 0
    out = capsys.readouterr().out
    assert "neurons selected" in out and "conservation" in out and (tmp_path / "vl/fraction_vs_tau.csv").exists()


def test_evaluate_on_tiny(tiny, tmp_path, capsys, one_thread):
    assert main(["evaluate", "--value", "power", "--method", "prompt", "--max-items", "4",
                 "--out", str(tmp_path / "e.csv")]) == 0
    out = capsys.readouterr().out
    assert "questionnaire" in out and "dilemma preference" in out and "delta [95% CI]" in out
    df = pd.read_csv(tmp_path / "e.csv")
    assert list(df.n) == [4, 4, 4] and set(df.method) == {"prompt"}


def test_audit_on_tiny(tiny, tmp_path, capsys, one_thread):
    texts = tmp_path / "t.txt"
    texts.write_text("The garden is green.\nI help my neighbour.\n\nWe went to the sea.\n")
    assert main(["audit", "--layer", "1", "--neuron", "3", "--k", "2", "--texts", str(texts), "--save",
                 str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "promotes:" in out and "suppresses:" in out
    assert len([line for line in out.splitlines() if line.lstrip()[:2] in ("1.", "2.") and "[[" in line]) == 2
    assert json.loads((tmp_path / "a.json").read_text())["index"] == 3
    assert main(["audit", "--layer", "1", "--neuron", "9999"]) == 2
    assert "neuron index 9999 does not exist" in capsys.readouterr().err


def test_show_synthetic_run(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "steering").mkdir(parents=True)
    (run / "valuelocate").mkdir()
    (run / "dual").mkdir()
    (run / "config.json").write_text(json.dumps({"command": "run", "values": ["power"], "ids": list(range(20)),
                                                  "config": {"seed": 3, "dual": {"k": 2}}}))
    (run / "steering/summary.csv").write_text("value,method,delta\npower,conva,0.25\n")
    (run / "valuelocate/fraction_vs_tau.csv").write_text("tau,fraction\n0.03,0.012\n")
    (run / "dual/structure.json").write_text('{"shared_share": 0.4}')
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert "power" in out and "... 12 more" in out and "conva" in out and "0.012" in out and "shared_share" in out
    assert "\nconfig\n  seed=3\n  dual: k=2\n" in out
    (run / "config.json").write_text("{oops")
    assert main(["show", str(run)]) == 1
    assert "not valid JSON" in capsys.readouterr().err


def test_export_roundtrip(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    vv = ValueVectors("benevolence", [0, 1, 2, 3], torch.randn(4, 16, generator=g), torch.zeros(4),
                      torch.full((4,), 0.95), torch.randn(4, 16, generator=g), [1, 2], {"model_id": "tiny-0"})
    src = vv.save(tmp_path / "run" / "conva" / "benevolence.safetensors")
    out = tmp_path / "b.gguf"
    assert main(["export", "--vectors", str(src), "--format", "gguf", "--out", str(out), "--scale", "2"]) == 0
    assert "control-vector-scaled" in capsys.readouterr().out
    reader = gguf.GGUFReader(str(out))
    got = {t.name: np.array(t.data) for t in reader.tensors}
    assert sorted(got) == ["direction.1", "direction.2"]
    assert np.array_equal(got["direction.1"], (vv.direction(1) * 2).numpy())
    assert reader.get_field("controlvector.model_hint").contents() == "llama"
    st = tmp_path / "b.safetensors"
    assert main(["export", "--run", str(tmp_path / "run"), "--value", "BE", "--format", "safetensors",
                 "--out", str(st), "--layers", "1,3", "--source", "mean_diff"]) == 0
    from mechvalue.export import load_bundle

    b = load_bundle(st)
    assert b.layers == [1, 3] and torch.equal(b.vectors[3], vv.mean_diff[3]) and b.meta["model_id"] == "tiny-0"
    assert main(["export", "--vectors", str(out), "--out", str(tmp_path / "c.safetensors")]) == 0  # gguf -> st
    assert torch.equal(load_bundle(tmp_path / "c.safetensors").vectors[2], torch.from_numpy(got["direction.2"]))
    assert main(["export", "--vectors", str(src), "--layers", "0", "--out", str(tmp_path / "z.gguf")]) == 2
    assert "layer 0" in capsys.readouterr().err
