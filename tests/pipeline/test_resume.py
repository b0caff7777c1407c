"""Reruns into one folder: fingerprints decide what is reused, nothing is relabelled, one run at a time.

The runner, the folder records and the CLI are real; the step bodies are replaced by tiny functions that
write what they were given, so every case runs in milliseconds.
"""

from __future__ import annotations

import json

import pytest

from mechvalue.cli.main import main
from mechvalue.core.artifacts import append_jsonl, read_jsonl_rows
from mechvalue.core.errors import CorruptFileError
from mechvalue.pipeline import steps as steps_module
from mechvalue.pipeline.config import STEPS, RunConfig
from mechvalue.pipeline.folder import RunFolder, RunFolderBusy


@pytest.fixture
def fake_steps(monkeypatch):
    """Each step writes ``<step>/out.txt`` from the config fields it reads; calls are counted."""
    calls: list[str] = []

    def make(step):
        def run(config, folder):
            calls.append(step)
            out = folder.out / step
            out.mkdir(parents=True, exist_ok=True)
            (out / "out.txt").write_text(f"{step} seed={config.seed} tau={config.vl_tau} values={config.values}")
            return {"made": step}
        return run
    for s in STEPS:
        monkeypatch.setitem(steps_module.STEP_FUNCTIONS, s, make(s))
    monkeypatch.setattr(steps_module, "print_summary", lambda folder: None)
    monkeypatch.setattr("mechvalue.pipeline.run.print_summary", lambda folder: None)
    return calls


def _run(tmp_path, *flags):
    return main(["run", "--out", str(tmp_path / "r"), "--values", "power,benevolence", *flags])


def test_same_config_reuses_and_a_new_seed_recomputes_and_is_recorded(tmp_path, fake_steps, capsys):
    assert _run(tmp_path) == 0
    assert fake_steps == list(STEPS)
    fake_steps.clear()
    capsys.readouterr()
    assert _run(tmp_path) == 0
    out = capsys.readouterr().out
    assert fake_steps == ["report"]  # the report is rebuilt every time; everything else is reused
    assert out.count("done earlier with the same inputs") == len(STEPS) - 1
    fake_steps.clear()
    assert _run(tmp_path, "--seed", "1") == 0
    out = capsys.readouterr().out
    assert fake_steps == list(STEPS)
    assert "[conva] inputs changed (config.seed: 0 -> 1): recomputing" in out
    run = tmp_path / "r"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["seed"] == 1 and cfg["config"]["seed"] == 1
    assert all(s["config"]["seed"] == 1 for name, s in cfg["steps"].items() if name != "report")
    assert (run / "conva" / "out.txt").read_text().startswith("conva seed=1")
    stale = sorted(p.name for p in (run / "stale").iterdir())
    assert any(n.startswith("conva-") for n in stale)  # the seed-0 results are kept aside, not relabelled


def test_a_changed_field_recomputes_its_step_and_everything_downstream(tmp_path, fake_steps, capsys):
    assert _run(tmp_path) == 0
    fake_steps.clear()
    cfg = tmp_path / "c.json"
    cfg.write_text('{"vl_tau": 0.05}')
    assert _run(tmp_path, "--config", str(cfg)) == 0
    assert fake_steps == ["valuelocate", "circuits", "audits", "report"]
    assert "[valuelocate] inputs changed (config.vl_tau: 0.03 -> 0.05)" in capsys.readouterr().out


def test_deleting_an_artifact_recomputes_that_step_and_downstream(tmp_path, fake_steps, capsys):
    assert _run(tmp_path) == 0
    fake_steps.clear()
    (tmp_path / "r" / "neva" / "out.txt").unlink()  # "delete the file and recompute" works
    assert _run(tmp_path) == 0
    assert fake_steps == ["neva", "steering", "circuits", "audits", "report"]
    assert "[neva] neva/out.txt is missing (deleted?): recomputing" in capsys.readouterr().out
    fake_steps.clear()
    (tmp_path / "r" / "conva" / "out.txt").write_text("edited by hand")
    assert _run(tmp_path) == 0
    assert fake_steps == ["conva", "steering", "report"]


def test_force_step_recomputes_it_and_downstream(tmp_path, fake_steps):
    assert _run(tmp_path) == 0
    fake_steps.clear()
    assert _run(tmp_path, "--force-step", "conva") == 0
    assert fake_steps == ["conva", "steering", "report"]
    assert _run(tmp_path, "--force-step", "plot") == 2


def test_steps_left_out_with_other_inputs_are_moved_aside(tmp_path, fake_steps, capsys):
    assert _run(tmp_path) == 0
    fake_steps.clear()
    assert _run(tmp_path, "--steps", "conva", "--seed", "4") == 0
    assert fake_steps == ["judge", "conva"]
    out = capsys.readouterr().out
    assert "[valuelocate] inputs changed" in out and "moved to" in out and "add --steps valuelocate" in out
    run = tmp_path / "r"
    assert not (run / "valuelocate").exists() and (run / "conva" / "DONE.json").exists()
    assert set(json.loads((run / "config.json").read_text())["steps"]) == {"judge", "conva"}


def test_results_from_an_older_mechvalue_are_recomputed(tmp_path, fake_steps, capsys):
    old = tmp_path / "r" / "conva"
    old.mkdir(parents=True)
    (old / "DONE.json").write_text('{"step": "conva", "seconds": 1.0}')  # the old layout's marker
    assert _run(tmp_path, "--steps", "conva") == 0
    assert "conva" in fake_steps and "no fingerprint" in capsys.readouterr().out


def test_a_second_run_into_the_same_folder_fails_naming_the_pid(tmp_path, fake_steps, capsys):
    folder = RunFolder(RunConfig.build({"out": str(tmp_path / "r")}))
    with folder.lock():
        with pytest.raises(RunFolderBusy, match=r"in use by pid \d+"):
            with RunFolder(RunConfig.build({"out": str(tmp_path / "r")})).lock():
                pass
        assert _run(tmp_path) == 1
        assert "in use by pid" in capsys.readouterr().err
    assert _run(tmp_path) == 0  # released


def test_interrupted_step_leaves_a_resumable_folder(tmp_path, fake_steps, capsys):
    real = steps_module.STEP_FUNCTIONS["dual"]

    def interrupted(config, folder):
        raise KeyboardInterrupt
    steps_module.STEP_FUNCTIONS["dual"] = interrupted
    try:
        assert _run(tmp_path) == 130
    finally:
        steps_module.STEP_FUNCTIONS["dual"] = real
    assert capsys.readouterr().err.strip() == "mechvalue: interrupted; rerun the same command to resume"
    run = tmp_path / "r"
    assert not (run / ".run.pid").exists() and not (run / "dual" / "DONE.json").exists()
    fake_steps.clear()
    assert _run(tmp_path) == 0
    assert fake_steps == list(STEPS[STEPS.index("dual"):])
    assert "[dual] unfinished earlier: running again" in capsys.readouterr().out


# ------------------------------------------------------------------ JSONL journals (a kill mid-write)

def test_torn_last_line_is_dropped_with_a_warning_and_complete_lines_never(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"')
    with pytest.warns(UserWarning, match="incomplete last line"):
        assert read_jsonl_rows(path) == [{"a": 1}, {"a": 2}]
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n'
    path.write_text('{"a": 1}\n{"a": 2}')  # complete, only its newline missing: kept
    assert read_jsonl_rows(path) == [{"a": 1}, {"a": 2}]
    append_jsonl(path, [{"a": 3}])
    assert read_jsonl_rows(path) == [{"a": 1}, {"a": 2}, {"a": 3}]
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(CorruptFileError, match=r"records.jsonl:2: not valid JSON"):
        read_jsonl_rows(path)
