"""Judge-free instruments on the real model: shapes, ranges, consistency with score(), errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechvalue.core.errors import MechvalueError
from mechvalue.data.bundled import load_dilemmas, load_portraits
from mechvalue.evaluate.scores import (
    dilemma_preference,
    mmlu_accuracy,
    next_token_distribution,
    perplexity,
    questionnaire,
)
from mechvalue.interventions.install import AddVector
from mechvalue.lm.generation import score
from mechvalue.lm.prompts import chat


def test_questionnaire_is_a_distribution_over_1_to_6(smollm):
    items = load_portraits("benevolence")[:3]
    df = questionnaire(smollm, items)
    probs = df[[f"p{k}" for k in range(1, 7)]].to_numpy()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert ((df.score >= 1) & (df.score <= 6)).all()
    assert np.allclose(df.score, (probs * np.arange(1, 7)).sum(1), atol=1e-4)
    steered = questionnaire(smollm, items, AddVector(10, torch.randn(576, generator=torch.Generator().manual_seed(0))
                                                     * 30))
    assert not np.allclose(steered.score, df.score)
    with pytest.raises(MechvalueError, match="no questionnaire items"):
        questionnaire(smollm, items, values=["power"])


def test_dilemma_preference_matches_score(smollm):
    dil = load_dilemmas("power")[:3]
    df = dilemma_preference(smollm, dil)
    lp = score(smollm, [chat(d.question) for d in dil], [[d.value_answer, d.conflict_answer] for d in dil])
    assert np.allclose(df.pref, (lp[:, 0] - lp[:, 1]).numpy(), atol=1e-4)
    assert set(df.win.unique()) <= {0.0, 1.0}
    assert (df.value == "power").all()


def test_perplexity_prefers_fluent_text(smollm):
    p = ["Tell me about the weather."] * 2
    ppl = perplexity(smollm, p, ["It is sunny and warm today, with a light breeze.",
                                 "breeze warm with today light sunny, It a and is."])
    assert ppl[0] < ppl[1]
    assert np.isnan(perplexity(smollm, ["x"], ["   "])[0])
    with pytest.raises(MechvalueError):
        perplexity(smollm, ["a", "b"], ["only one"])


def test_mmlu_accuracy_and_letter_distribution(smollm, shared_data):
    from mechvalue.data.public import load_mmlu

    qs = load_mmlu(shared_data / "mmlu" / "mmlu_dev.csv")[:6]
    acc = mmlu_accuracy(smollm, qs)
    assert acc.shape == (6,) and set(np.unique(acc)) <= {0.0, 1.0}
    with pytest.raises(MechvalueError, match="splits"):
        next_token_distribution(smollm, [chat("hi")], ["multi token word here"])
