"""``mechvalue models`` and the ``--backend`` option."""

from __future__ import annotations

import json

from mechvalue.cli.main import main
from mechvalue.lm.families import FAMILIES


def test_models_lists_every_family_with_its_backend(capsys):
    assert main(["models", "--no-probe", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["family"]: r for r in out["families"]}
    assert set(rows) == set(FAMILIES)
    assert "mlp.hook_post" in out["required_hooks"]
    assert rows["gemma2"]["backends"] == "bridge"  # TransformerLens has no HookedTransformer converter for it
    assert "8-23" in rows["qwen2"]["papers' layers"]


def test_models_probe_loads_a_tiny_model_of_each_family(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for family in FAMILIES:
        line = next(line for line in out.splitlines() if line.startswith(family + " "))
        assert " all " in line  # every hook the methods need exists on the backend it loaded with


def test_backend_is_checked_on_the_command_line_and_in_config_files(tmp_path, capsys, monkeypatch, no_model):
    import mechvalue.pipeline.run

    seen = {}
    monkeypatch.setattr(mechvalue.pipeline.run, "run_main", lambda config, force=(): seen.update(config=config))
    assert main(["run", "--backend", "vllm"]) == 2
    cfg = tmp_path / "run.json"
    cfg.write_text('{"backend": "tensorrt"}')
    assert main(["run", "--config", str(cfg)]) == 2
    assert "backend must be one of auto, hooked, bridge" in capsys.readouterr().err
    cfg.write_text('{"backend": "bridge"}')
    assert main(["run", "--config", str(cfg)]) == 0 and seen["config"].backend == "bridge"
    assert main(["run", "--config", str(cfg), "--backend", "hooked"]) == 0 and seen["config"].backend == "hooked"
