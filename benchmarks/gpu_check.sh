#!/usr/bin/env bash
# GPU check (issue: fast steered generation, the path to 7B models): a Qwen2.5-7B-shaped model with random
# weights in bf16 on one GPU; prints collection and steered-generation throughput against HF and peak memory.
# Needs a venv with a CUDA build of torch and mechvalue installed (./scripts/setup.sh installs the CPU build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
timeout 600 "$PY" benchmarks/gpu_check.py --device cuda "$@"
