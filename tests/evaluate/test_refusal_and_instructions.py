"""Refusal detection (prefix list, classifier head, agreement) and lm-eval's instruction checks, offline."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from mechvalue.core.errors import DataError, MechvalueError
from mechvalue.evaluate.refusal import RefusalClassifier, agreement, detector_accuracy, prefix_refusal

needs_lm_eval = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                   reason="lm-eval is not installed (pip install 'lm-eval[ifeval]')")


def test_prefix_list_catches_standard_refusals_and_misses_soft_ones():
    texts = ["I'm sorry, but I can't help with that.", "As an AI, I cannot do this.", "Sure! Here is a recipe.",
             "That's not something I'll help with.", ""]
    assert prefix_refusal(texts).tolist() == [True, True, False, False, False]


def test_agreement_and_kappa():
    a = [True, True, False, False]
    assert agreement(a, a) == {"agreement": 1.0, "kappa": 1.0, "n": 4, "rate_a": 0.5, "rate_b": 0.5}
    flipped = agreement(a, [False, False, True, True])
    assert flipped["agreement"] == 0.0 and flipped["kappa"] == pytest.approx(-1.0)
    assert np.isnan(agreement([True, True], [True, True])["kappa"])  # chance agreement 1: undefined
    with pytest.raises(MechvalueError, match="one length"):
        agreement([True], [True, False])


def test_detector_accuracy_against_hand_labels():
    truth = [True, True, False, False, False, False]
    always = detector_accuracy(truth, [True] * 6)  # calls everything a refusal: chance balanced accuracy
    assert always["balanced_accuracy"] == 0.5 and always["recall"] == 1.0
    assert always["precision"] == pytest.approx(1 / 3)
    m = detector_accuracy(truth, [True, False, False, False, False, True])
    assert m["recall"] == 0.5 and m["specificity"] == 0.75 and m["balanced_accuracy"] == pytest.approx(0.625)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["n"] == 6 and m["n_refusals"] == 2
    assert np.isnan(detector_accuracy([False, False], [False, False])["precision"])  # nothing predicted
    assert np.isnan(detector_accuracy([False, False], [False, True])["recall"])  # no refusals to find
    with pytest.raises(MechvalueError, match="one non-zero length"):
        detector_accuracy([True], [True, False])


def test_classifier_head_recovers_a_planted_refusal_marker(tiny_model):
    """Refusals carry words the answers never use: the head must separate held-out texts by them."""
    rng = np.random.default_rng(0)
    topics = ["the garden", "my taxes", "a birthday", "the river", "old photos", "a long trip", "the kitchen",
              "dinner plans", "the weather", "a new job", "the library", "music lessons"]
    refusals = [f"I cannot and will not help with {t}; decline refused." for t in topics for _ in range(2)]
    answers = [f"Here is a plan for {t}: start early and enjoy it." for t in topics for _ in range(2)]
    texts, labels = refusals + answers, [True] * len(refusals) + [False] * len(answers)
    order = rng.permutation(len(texts))
    clf = RefusalClassifier.train(tiny_model, [texts[i] for i in order], [labels[i] for i in order], layer=1, C=1.0)
    assert clf.metrics["test_accuracy"] >= 0.9 and clf.metrics["n_test"] >= 10
    assert clf.predict(["I cannot and will not help with rivers; decline refused.",
                        "Here is a plan for rivers: start early and enjoy it."]).tolist() == [True, False]


def test_classifier_refuses_one_class_or_tiny_data(tiny_model):
    with pytest.raises(DataError, match="refusals and non-refusals"):
        RefusalClassifier.train(tiny_model, ["a b c"] * 10, [True] * 10)
    with pytest.raises(DataError, match=">= 8 texts"):
        RefusalClassifier.train(tiny_model, ["a", "b"], [True, False])


@needs_lm_eval
def test_lm_eval_checkers_run_offline_including_sentence_counts():
    from mechvalue.evaluate.instructions import follows, known_instructions, punkt_status

    assert "punctuation:no_comma" in known_instructions()
    assert punkt_status()  # trained data or the offline untrained model, never a download
    responses = ["all lowercase here", "Has, a comma", "One. Two. Three.", "Only one sentence here"]
    prompts = ["p"] * 4
    ids = [["change_case:english_lowercase"], ["punctuation:no_comma"], ["length_constraints:number_sentences"],
           ["length_constraints:number_sentences"]]
    kwargs = [[{}], [{}], [{"relation": "at least", "num_sentences": 3}], [{"relation": "at least",
                                                                            "num_sentences": 3}]]
    assert follows(responses, prompts, ids, kwargs)[:, 0].tolist() == [True, False, True, False]
    assert not follows([""], ["p"], [["punctuation:no_comma"]], [[{}]])[0, 0]  # empty follows nothing


@needs_lm_eval
def test_instruction_checks_name_bad_input():
    from mechvalue.evaluate.instructions import follows

    with pytest.raises(DataError, match="unknown IFEval instruction 'nope:x'"):
        follows(["a"], ["p"], [["nope:x"]], [[{}]])
    with pytest.raises(DataError, match="bad kwargs"):
        follows(["a"], ["p"], [["punctuation:no_comma"]], [[{"colour": "red"}]])
    with pytest.raises(MechvalueError, match="one of each per response"):
        follows(["a", "b"], ["p"], [["punctuation:no_comma"]], [[{}]])
