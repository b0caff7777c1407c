"""The package layout: the layers hold (import-linter), the command line starts without torch, the API is lazy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout


def test_the_command_line_parses_without_torch_or_transformer_lens():
    out = _fresh("import sys; from mechvalue.cli.main import build_parser; build_parser(); "
                 "print(sorted(m for m in ('torch', 'transformer_lens', 'transformers') if m in sys.modules))")
    assert out.strip() == "[]"


def test_public_api_loads_lazily_and_completely():
    out = _fresh("import sys, mechvalue as mv; print('torch' in sys.modules); "
                 "missing = [n for n in mv.__all__ if getattr(mv, n, None) is None]; print(missing); "
                 "print(mv.generate.__module__, mv.AddVector.__module__, mv.lm.__name__)")
    lazy, missing, where = out.strip().splitlines()
    assert lazy == "False" and missing == "[]"
    assert where == "mechvalue.lm.generation mechvalue.interventions.specs mechvalue.lm"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import mechvalue

        mechvalue.nope  # noqa: B018


@pytest.mark.skipif(shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None,
                    reason="import-linter is not installed in this environment")
def test_import_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    res = subprocess.run([exe], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:]
    assert "0 broken" in res.stdout
