"""Judges on Touché23-ValueEval validation: macro-F1 vs the all-positive baseline, and AUC.

    .venv/bin/python experiments/judges_touche.py [--touche ../shared/data/touche23_valueeval]

Trains the classifier judge with its defaults (SmolLM2 layer-15 mean-pooled features,
heads on our train pairs), then evaluates it, its relevance head and the lexicon judge
with one threshold (0.5, or tuned on 1,000 training rows) and per-value tuned thresholds.
"""

from __future__ import annotations

import argparse
import time

from mechvalue.data.public import load_touche
from mechvalue.evaluate.judges import ClassifierJudge, LexiconJudge, evaluate_judge_on_touche
from mechvalue.lm.models import load_model


class _Relevance:
    name = "classifier-relevance"

    def __init__(self, judge: ClassifierJudge):
        self.j = judge

    def judge(self, texts, value, *, questions=None):
        return self.j.relevance(texts, value)

    def judge_many(self, texts, values=None, *, questions=None):
        return self.j.relevance_many(texts, values)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--touche", default="../shared/data/touche23_valueeval")
    args = ap.parse_args()
    t0 = time.time()
    val = load_touche(args.touche, "validation")
    train = load_touche(args.touche, "training").sample(1000, random_state=0)
    model = load_model()
    clf = ClassifierJudge.train(model)
    print(f"classifier held-out metrics: {clf.metrics}", flush=True)
    for judge in (clf, _Relevance(clf), LexiconJudge()):
        for kw in ({}, {"train_df": train}, {"train_df": train, "per_value": True}):
            r = evaluate_judge_on_touche(judge, val, **kw)
            mac = r.set_index("value").loc["macro"]
            print(f"{r.attrs['judge']:22s} {r.attrs['threshold_source']:28s} macro-F1 {r.attrs['macro_f1']:.3f} "
                  f"baseline {r.attrs['baseline_macro_f1']:.3f} AUC {mac['auc']:.3f}", flush=True)
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
