"""Shared builders for the dual-mechanism tests (test_dual.py, test_dual_vectors.py)."""

from __future__ import annotations

import numpy as np
import torch

from mechvalue.methods.dual import DualVectors


def basis(d: int, k: int) -> torch.Tensor:
    e = torch.zeros(d)
    e[k] = 1.0
    return e


def make_vectors(intrinsic, prompted, values=("benevolence",), layers=(0,), **meta) -> DualVectors:
    return DualVectors(list(values), list(layers), intrinsic, prompted,
                       {"model_id": "tiny-0", "processing": "none", **meta})


def make_rows(n: int, condition: str, value: str | None, texts):
    return [{"id": f"{condition}:{value}|q{k}" if value else f"intrinsic|q{k}", "condition": condition,
             "value": value, "query_id": f"q{k}", "query": f"Question number {k}?",
             "system": None if value is None else "Please be kind.", "response": texts[k % len(texts)]}
            for k in range(n)]


class WordJudge:
    """Scores 1 when the value's marker word occurs."""

    name = "word"

    def __init__(self, words):
        self.words, self.calls = words, 0

    def judge(self, texts, value):
        self.calls += 1
        return np.array([float(self.words.get(value, "@@") in t) for t in texts])
