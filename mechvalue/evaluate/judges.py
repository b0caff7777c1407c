"""Value judges: does a text express (or prioritise) a Schwartz value? Scores in [0, 1].

Three back-ends behind one :class:`Judge` protocol (``name`` and ``judge(texts, value, questions=)``):

- :class:`LexiconJudge`: pyvalues' Personal Values Dictionary (English, 2022-10-07); a value's score is
  ``hits / (hits + 1)`` over its dictionary words, so ``label`` (score >= 0.5) reproduces pyvalues'
  dictionary classifier exactly (a value is assigned as soon as one of its words occurs).
- :class:`ClassifierJudge`: logistic heads on mean-pooled ``resid_post`` features of the unmodified base
  model at one middle layer (raw text, no template), trained on the bundled pairs' train split; plus a
  ``relevance`` head usable as ConVA's gate.
- :class:`OpenAIJudge`: any OpenAI-compatible endpoint, with ConVA's yes/no control-success prompt
  (:data:`CSR_PROMPT`) or a G-EVAL 1-5 rubric (:data:`GEVAL_PROMPT`), probability-weighted when the server
  returns logprobs; see :mod:`mechvalue.evaluate.openai_judge` for its cache, retries and concurrency.

:func:`evaluate_judge_on_touche` scores any judge on Touché23-ValueEval (macro-F1 against the trivial
all-positive baseline).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mechvalue.core.artifacts import load_tensors, save_tensors
from mechvalue.core.errors import CorruptFileError, DataError, MechvalueError
from mechvalue.core.values import VALUES, canonical, canonical_list
from mechvalue.evaluate.openai_judge import CSR_PROMPT, GEVAL_PROMPT, OpenAIJudge

__all__ = ["CSR_PROMPT", "GEVAL_PROMPT", "ClassifierJudge", "Judge", "JudgeBase", "LexiconJudge", "OpenAIJudge",
           "evaluate_judge_on_touche", "judge_many"]


@runtime_checkable
class Judge(Protocol):
    """Anything that scores texts for a value: ``judge(texts, value, questions=None) -> [n]`` in [0, 1].

    ``questions`` (optional, one per text) are the prompts the texts answer; judges that only read the
    text ignore them.
    """

    name: str

    def judge(self, texts: Sequence[str], value: str, *,
              questions: Sequence[str] | None = None) -> np.ndarray: ...


class JudgeBase:
    """Shared helpers: ``label`` (1 at or above ``threshold``, else 0) and a per-value ``judge_many``."""

    name = "judge"
    threshold = 0.5

    def judge(self, texts: Sequence[str], value: str, *,
              questions: Sequence[str] | None = None) -> np.ndarray:
        return self.judge_many(texts, [value], questions=questions)[:, 0]

    def judge_many(self, texts: Sequence[str], values: Sequence[str] | None = None, *,
                   questions: Sequence[str] | None = None) -> np.ndarray:
        """``[n_texts, n_values]`` scores (default: all ten values, circumplex order)."""
        if type(self).judge is JudgeBase.judge:
            raise NotImplementedError(f"{type(self).__name__} must override judge or judge_many")
        return np.stack([self.judge(texts, v, questions=questions) for v in canonical_list(values)], axis=1)

    def label(self, texts: Sequence[str], value: str, *, questions: Sequence[str] | None = None) -> np.ndarray:
        """Binary labels {1, 0} (scores thresholded at ``self.threshold``)."""
        return (self.judge(texts, value, questions=questions) >= self.threshold).astype(float)


def judge_many(judge: Judge, texts: Sequence[str], values: Sequence[str] | None = None, *,
               questions: Sequence[str] | None = None) -> np.ndarray:
    """``[n_texts, n_values]`` scores from any judge (its own ``judge_many`` when it has one)."""
    values = canonical_list(values)
    if callable(getattr(judge, "judge_many", None)):
        return np.asarray(judge.judge_many(texts, values, questions=questions), dtype=float)
    return np.stack([np.asarray(judge.judge(texts, v, questions=questions), dtype=float) for v in values], 1)


def _texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise DataError("texts must be a sequence of strings, not one string")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(f"texts must be strings; items {bad[:5]} are not")
    return texts


# ---------------------------------------------------------------- lexicon


class LexiconJudge(JudgeBase):
    """pyvalues' dictionary classifier (Personal Values Dictionary) with graded scores.

    Tokens are pyvalues' (punctuation stripped, whitespace split, lower-cased); a value's ``hits`` is the
    summed dictionary score of its words in the text and its score ``hits / (hits + saturation)``.
    """

    name = "lexicon"

    def __init__(self, language: str = "en", saturation: float = 1.0):
        from importlib.resources import files

        from pydantic_extra_types.language_code import LanguageAlpha2
        from pyvalues.dictionary_classifier import get_dictionaries, normalize_dictionary_token, simple_tokenize

        res = files("pyvalues.assets.dictionaries.20221007") / f"{language}.json"
        if not res.is_file():
            raise MechvalueError(f"pyvalues has no dictionary for language {language!r}")
        self.language, self.saturation = LanguageAlpha2(language), float(saturation)
        with res.open() as fh:
            raw = get_dictionaries(fh, self.language)
        self._tokenize, self._norm = simple_tokenize, normalize_dictionary_token
        self._lex = {tok: {canonical(v): s.total() for v, s in entry.items()} for tok, entry in raw.items()}

    def hits(self, texts: Sequence[str]) -> np.ndarray:
        """``[n_texts, 10]`` summed dictionary scores, columns in :data:`~mechvalue.core.values.VALUES` order."""
        out = np.zeros((len(texts), len(VALUES)))
        col = {v: i for i, v in enumerate(VALUES)}
        for i, text in enumerate(_texts(texts)):
            for tok in self._tokenize(text):
                for v, s in self._lex.get(self._norm(tok, self.language), {}).items():
                    out[i, col[v]] += s
        return out

    def judge_many(self, texts, values=None, *, questions=None) -> np.ndarray:
        h = self.hits(texts)[:, [VALUES.index(v) for v in canonical_list(values)]]
        return h / (h + self.saturation)


# ---------------------------------------------------------------- classifier on model features


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def _fit_head(x: np.ndarray, y: np.ndarray, w: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    """Weighted L2 logistic regression on standardized features; returns (coef [d], intercept)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # a small problem: extra BLAS threads only cost (40x on a busy 2-core box)
        clf = LogisticRegression(C=C, max_iter=5000).fit(x, y, sample_weight=w * len(y) / w.sum())
    return clf.coef_[0].astype(np.float32), float(clf.intercept_[0])


def _weights(groups: Mapping[str, np.ndarray]) -> np.ndarray:
    """Sample weights giving each named group (boolean mask) the total weight of its share."""
    shares = {"pos": 0.5, "neg": 0.25, "other": 0.25, "in": 0.5, "out": 0.5}
    w = np.zeros(len(next(iter(groups.values()))))
    for name, mask in groups.items():
        if mask.any():
            w[mask] = shares[name] / mask.sum()
    return w


def _balanced_acc(p: np.ndarray, y: np.ndarray, t: float = 0.5) -> float:
    return float(0.5 * ((p[y] >= t).mean() + (p[~y] < t).mean()))


class ClassifierJudge(JudgeBase):
    """Logistic heads on the base model's mean-pooled residual stream (see :meth:`train`).

    ``judge`` is P(text expresses the value); ``relevance`` is P(text is about the value's domain at all,
    either way), the gate of ConVA. ``metrics`` holds held-out (test split) accuracies.
    """

    name = "classifier"
    _KIND = "ClassifierJudge"

    def __init__(self, model, tensors: Mapping[str, Any], meta: Mapping[str, Any]):
        self.model, self.meta = model, dict(meta)
        self._t = {k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()}
        self.values: list[str] = list(self.meta["values"])
        self.layer: int = int(self.meta["layer"])
        self.hook: str = self.meta["hook"]
        self._memo: dict[str, np.ndarray] = {}  # features of the last few text lists

    @property
    def metrics(self) -> dict[str, Any]:
        return self.meta.get("metrics", {})

    @classmethod
    def train(cls, model, *, layer: int | None = None, values: Sequence[str] | None = None, C: float = 0.01,
              max_length: int = 64, batch_size: int = 32, data_root: str | Path | None = None,
              progress: bool = False) -> ClassifierJudge:
        """Train one expression head and one relevance head per value on the pairs' train split.

        Features: ``blocks.{layer}.hook_resid_post`` averaged over the raw text's tokens (no template, BOS
        excluded; ``layer`` default ``n_layers // 2``), standardized with the train split's mean and std;
        L2 strength ``C`` (0.01 was best of 0.003-1 on SmolLM2's test split, layers 12-18).

        Expression head of value v (one-vs-rest within the pairs): positives of v are 1 (half the weight);
        negatives of v (a quarter: same scene, value dropped, so the head reads the value and not the
        topic) and positives of the other values (a quarter: the value and not just "some value") are 0.
        Negatives of other values are left out: they often express a neighbour of v. Relevance head:
        pairs of v (both sides) vs pairs of other values, equal weight. Accuracies at threshold 0.5 on
        the test split are recorded in ``metrics``: ``pair_acc`` (positives vs negatives of v),
        ``balanced_acc`` (the head's own design), ``auc`` and ``relevance_acc``.
        """
        from sklearn.metrics import roc_auc_score

        from mechvalue.core.hooks import check_layers, resid_hook
        from mechvalue.data.bundled import load_pairs
        from mechvalue.lm.models import model_info

        values = canonical_list(values)
        if len(values) < 2:
            raise MechvalueError("ClassifierJudge.train needs at least two values (the others are its negatives)")
        layer = check_layers(model, model.cfg.n_layers // 2 if layer is None else layer)[0]
        hook = resid_hook(layer)
        info = model_info(model)
        meta = {"kind": cls._KIND, "model_id": info.get("model_id"), "processing": info.get("processing"),
                "d_model": int(model.cfg.d_model), "layer": layer, "hook": hook, "span": "prompt",
                "reduce": "mean", "max_length": max_length, "batch_size": batch_size, "C": C, "values": values}
        judge = cls(model, {}, meta)
        splits = {}
        for split in ("train", "test"):
            pairs = load_pairs(values, split=split, root=data_root)
            if not pairs:
                raise DataError(f"no {split} pairs for {values}")
            feats = judge._features([p.positive for p in pairs] + [p.negative for p in pairs], progress)
            owner = np.array([p.value for p in pairs] * 2)
            positive = np.r_[np.ones(len(pairs), bool), np.zeros(len(pairs), bool)]
            splits[split] = (feats, owner, positive)
        x, owner, positive = splits["train"]
        mean, scale = x.mean(0), x.std(0) + 1e-6
        x = (x - mean) / scale
        coef, icpt, rcoef, ricpt = [], [], [], []
        for v in values:
            mine = owner == v
            use = mine | positive
            w = _weights({"pos": mine & positive, "neg": mine & ~positive, "other": ~mine & positive})
            c, b = _fit_head(x[use], (mine & positive)[use], w[use], C)
            coef.append(c)
            icpt.append(b)
            c, b = _fit_head(x, mine, _weights({"in": mine, "out": ~mine}), C)
            rcoef.append(c)
            ricpt.append(b)
        judge._t = {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32),
                    "coef": np.stack(coef), "intercept": np.array(icpt, np.float32),
                    "rel_coef": np.stack(rcoef), "rel_intercept": np.array(ricpt, np.float32)}
        xt, owner, positive = splits["test"]
        p_expr, p_rel = judge._heads(xt, "coef", "intercept"), judge._heads(xt, "rel_coef", "rel_intercept")
        metrics: dict[str, Any] = {}
        for k, v in enumerate(values):
            mine = owner == v
            use, y = mine | positive, mine & positive
            metrics[v] = {"pair_acc": float(((p_expr[mine, k] >= 0.5) == positive[mine]).mean()),
                          "balanced_acc": _balanced_acc(p_expr[use, k], y[use]),
                          "auc": float(roc_auc_score(y[use], p_expr[use, k])),
                          "relevance_acc": _balanced_acc(p_rel[:, k], mine)}
        metrics["mean"] = {m: float(np.mean([metrics[v][m] for v in values])) for m in metrics[values[0]]}
        meta.update(metrics=metrics, n_train=int(len(splits["train"][1])), n_test=int(len(owner)))
        judge.meta = meta
        return judge

    def _features(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        from mechvalue.lm.collect import collect
        from mechvalue.lm.prompts import raw

        texts = _texts(texts)
        key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
        if key in self._memo:
            return self._memo[key]
        if not texts:
            return np.zeros((0, int(self.meta["d_model"])), np.float32)
        if any(not t.strip() for t in texts):
            raise DataError("ClassifierJudge cannot read empty texts")
        hooked = [n for n, hp in self.model.hook_dict.items() if getattr(hp, "fwd_hooks", None)]
        if hooked:  # e.g. called from a prompt gate inside intervene(): the features would be steered
            raise MechvalueError(f"ClassifierJudge reads the unmodified model, but hooks are installed at "
                                 f"{hooked[:3]}; judge outside intervene(), e.g. precompute a gate as "
                                 "judge.relevance(prompts, value) > g0")
        stats = collect(self.model, [raw(t) for t in texts], layers=[self.layer], span=self.meta["span"],
                        resid=False, mlp=False, features={self.hook: "mean"}, batch_size=self.meta["batch_size"],
                        max_length=self.meta["max_length"], progress=progress, desc="judge features")
        feats = stats.features[self.hook].numpy()
        self._memo = {**dict(list(self._memo.items())[-3:]), key: feats}
        return feats

    def _heads(self, feats: np.ndarray, coef: str, icpt: str, values: Sequence[str] | None = None) -> np.ndarray:
        idx = [self.values.index(v) for v in values] if values is not None else list(range(len(self.values)))
        x = (feats - self._t["mean"]) / self._t["scale"]
        return _sigmoid(x @ self._t[coef][idx].T + self._t[icpt][idx])

    def _check_values(self, values) -> list[str]:
        values = canonical_list(values if values is not None else self.values)
        missing = [v for v in values if v not in self.values]
        if missing:
            raise MechvalueError(f"this ClassifierJudge has no head for {missing}; trained on {self.values}")
        return values

    def judge_many(self, texts, values=None, *, questions=None) -> np.ndarray:
        values = self._check_values(values)
        return self._heads(self._features(texts), "coef", "intercept", values).astype(float)

    def relevance_many(self, texts: Sequence[str], values: Sequence[str] | None = None) -> np.ndarray:
        values = self._check_values(values)
        return self._heads(self._features(texts), "rel_coef", "rel_intercept", values).astype(float)

    def relevance(self, texts: Sequence[str], value: str) -> np.ndarray:
        """P(the text is about ``value``, for or against it): a gate score for ConVA-style steering."""
        return self.relevance_many(texts, [value])[:, 0]

    def save(self, path: str | Path) -> Path:
        import torch

        return save_tensors(path, {k: torch.from_numpy(v) for k, v in self._t.items()}, self.meta)

    @classmethod
    def bundled(cls, model) -> ClassifierJudge | None:
        """The judge shipped in ``data/judges/`` for this model and weight processing, if any (else None)."""
        from mechvalue.data.bundled import data_dir

        for path in sorted((data_dir() / "judges").glob("*.safetensors")):
            try:
                return cls.load(path, model)
            except CorruptFileError:
                continue
        return None

    @classmethod
    def load(cls, path: str | Path, model) -> ClassifierJudge:
        """Load a saved judge for ``model``; refuses one trained on another model or weight processing."""
        from mechvalue.lm.models import model_info

        tensors, meta = load_tensors(path, kind=cls._KIND)
        info = model_info(model)
        for key, have in (("model_id", info.get("model_id")), ("processing", info.get("processing")),
                          ("d_model", int(model.cfg.d_model))):
            if meta.get(key) != have:
                raise CorruptFileError(f"{path}: judge was trained with {key}={meta.get(key)!r}, but the model "
                                       f"has {key}={have!r}; retrain it with ClassifierJudge.train(model)")
        missing = {"mean", "scale", "coef", "intercept", "rel_coef", "rel_intercept"} - set(tensors)
        if missing or "layer" not in meta or "values" not in meta:
            raise CorruptFileError(f"{path}: incomplete ClassifierJudge (missing {sorted(missing)})")
        return cls(model, {k: v.numpy() for k, v in tensors.items()}, meta)


# ---------------------------------------------------------------- Touché23-ValueEval


def _f1(pred: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    tp = float((pred & y).sum())
    prec = tp / pred.sum() if pred.sum() else 0.0
    rec = tp / y.sum() if y.sum() else 0.0
    return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)


def _best_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """The cut that maximizes (macro-)F1 over the columns; candidates are the scores' quantiles."""
    grid = np.unique(np.quantile(scores, np.linspace(0, 1, 201)))
    f1 = [np.mean([_f1(scores[:, k] >= t, y[:, k])[2] for k in range(y.shape[1])]) for t in grid]
    return float(grid[int(np.argmax(f1))])


def evaluate_judge_on_touche(judge: Judge, touche_df, values: Sequence[str] | None = None, *,
                             threshold: float | Mapping[str, float] | None = None, train_df=None,
                             per_value: bool = False, text_column: str = "premise"):
    """Per-value precision, recall, F1 and ROC AUC of ``judge`` on Touché23-ValueEval, plus a ``macro`` row.

    ``touche_df`` is :func:`mechvalue.data.public.load_touche` output (use the validation split). Texts
    are the premises; a value's gold label is 1 when any of its Touché labels is. The decision threshold
    is, in this order: ``threshold`` if given (one number, or one per value); else tuned on ``train_df``
    (the Touché training split, or a sample of it) to maximize macro-F1 there, one threshold for the
    judge, or one per value with ``per_value=True``; else the judge's own ``threshold`` attribute (0.5).
    ``baseline_f1`` is the trivial all-positive predictor's F1, ``2p / (1 + p)`` for prevalence p.
    ``df.attrs`` holds ``macro_f1``, ``baseline_macro_f1`` and the thresholds used.
    """
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    values = canonical_list(values)
    for df, what in ((touche_df, "touche_df"), (train_df, "train_df")):
        if df is not None and (missing := [c for c in [text_column, *values] if c not in df.columns]):
            raise DataError(f"{what} lacks columns {missing}; pass load_touche(...) output")
    if len(touche_df) == 0:
        raise DataError("touche_df has no rows")
    if threshold is not None:
        thr = {v: float(threshold[v] if isinstance(threshold, Mapping) else threshold) for v in values}
        source = "given"
    elif train_df is not None:
        s_tr = judge_many(judge, train_df[text_column].tolist(), values)
        y_tr = train_df[values].to_numpy().astype(bool)
        if per_value:
            thr = {v: _best_threshold(s_tr[:, [k]], y_tr[:, [k]]) for k, v in enumerate(values)}
        else:
            thr = dict.fromkeys(values, _best_threshold(s_tr, y_tr))
        source = "tuned on train_df" + (" per value" if per_value else "")
    else:
        thr, source = dict.fromkeys(values, float(getattr(judge, "threshold", 0.5))), "judge default"
    scores = judge_many(judge, touche_df[text_column].tolist(), values)
    y = touche_df[values].to_numpy().astype(bool)
    rows = []
    for k, v in enumerate(values):
        p = float(y[:, k].mean())
        prec, rec, f1 = _f1(scores[:, k] >= thr[v], y[:, k])
        auc = float(roc_auc_score(y[:, k], scores[:, k])) if 0 < y[:, k].sum() < len(y) else float("nan")
        rows.append({"value": v, "n": len(y), "prevalence": p, "threshold": thr[v], "precision": prec,
                     "recall": rec, "f1": f1, "baseline_f1": 2 * p / (1 + p), "auc": auc})
    out = pd.DataFrame(rows)
    macro = out.drop(columns=["value", "n"]).mean().to_dict()
    out = pd.concat([out, pd.DataFrame([{"value": "macro", "n": len(y), **macro}])], ignore_index=True)
    out.attrs.update(judge=getattr(judge, "name", type(judge).__name__), macro_f1=macro["f1"],
                     baseline_macro_f1=macro["baseline_f1"], thresholds=thr, threshold_source=source)
    return out
