"""Automated neuron explanations after Bills et al. 2023, "Language models can explain neurons in language models".

For each neuron ``(layer, index)``, i.e. ``blocks.{layer}.mlp.hook_post[..., index]``:

1. the texts are read once (:func:`scan_activations`) and split by a seeded shuffle into an explanation
   half and a held-out half (:func:`select_records`; :func:`neuron_records` for one neuron);
2. an explainer model sees the top ``n_explain`` texts of the explanation half as ``token<TAB>activation``
   lines, activations discretised to integers 0-10 relative to the neuron's max over those texts
   (:func:`discretize`, :func:`format_examples`), and completes "the main thing this neuron does is find ..."
   in one short phrase (:func:`explanation_prompt`, :func:`parse_explanation`);
3. a simulator (the same endpoint) gets only the explanation and the tokens of each simulation text -- the
   top ``n_top_holdout`` plus ``n_random_holdout`` random texts of the held-out half (Bills' top+random
   scoring) -- and predicts an activation 0-10 per token (:func:`simulation_prompt`, :func:`parse_simulation`);
4. the score is the Pearson correlation of the predicted and the true (real-valued) activations over all
   tokens of all simulation texts (:func:`simulation_score`); ``n_random`` random neurons of the same layers,
   explained and scored the same way, are the baseline (:func:`summarize`: mean score of targets vs random
   neurons with bootstrap 95% CIs, and their difference).

Usage::

    from mechvalue.evaluate.explain import Explainer, explain_neurons, summarize

    explainer = Explainer("http://127.0.0.1:8080/v1", "qwen2.5-7b-instruct", cache="runs/explain/cache.jsonl")
    df = explain_neurons(model, [(12, 345), (12, 7)], None, explainer, n_random=5)  # None: audit.default_texts()
    print(df[["layer", "index", "kind", "score", "explanation"]])
    print(summarize(df))  # {"target": {"mean", "ci_low", ...}, "random": {...}, "difference": {...}}

    # the same from the command line (explanations.csv, summary.json and the request cache go to --out):
    #   mechvalue explain --layer 12 --neuron 345 --base-url http://127.0.0.1:8080/v1 --explainer-model qwen
    #   mechvalue explain --run runs/default --neuron-class shared --top 10 --random 10 --out runs/explain

The pure parts (prompts, reply parsing, scores, :func:`summarize`) live in :mod:`.explain_prompts` and are
re-exported here. Endpoint: any OpenAI-compatible chat server (llama.cpp, vLLM, OpenAI); ``$OPENAI_BASE_URL``,
``$MECHVALUE_EXPLAIN_MODEL`` and ``$OPENAI_API_KEY`` are the defaults. Temperature 0. Every reply is cached
in an append-only JSONL file (:class:`~mechvalue.evaluate.openai_judge.JudgmentCache`, keyed by a sha256 of
model, prompt and sampling parameters; one fsynced line per reply), so a rerun sends no request already
answered and an interrupted run resumes. At most ``concurrency`` requests are in flight; 429/5xx/timeouts are
retried (:func:`~mechvalue.core.endpoint.call_with_retries`), 401/403/404 stop the run at once, and a reply
with no usable content (an empty explanation, no readable ``token<TAB>number`` line) is re-asked
``max_malformed`` times, then kept (the neuron scores NaN, with the reason in ``note``).

Differences from Bills et al.: one explanation at temperature 0 (not the best of several); the simulator
writes its numbers in one reply per text (they read its logprobs over 0-10 at every token and score the
expected value); texts are read raw (no chat template), at most ``max_length`` tokens each (longer texts
keep their end, as :mod:`.audit` does), special tokens (BOS) left out.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from mechvalue.core.endpoint import ClientConfig, GiveUp, MalformedReply, call_with_retries, endpoint_config
from mechvalue.core.errors import DataError, HookError, MechvalueError
from mechvalue.core.hooks import check_hook, check_layers, mlp_hook
from mechvalue.evaluate.audit import default_texts, mark_max
from mechvalue.evaluate.explain_prompts import (
    ActivationRecord,
    discretize,
    explanation_prompt,
    format_examples,
    parse_explanation,
    parse_simulation,
    score_with_note,
    show_token,
    simulation_prompt,
    simulation_score,
    summarize,
)
from mechvalue.evaluate.openai_judge import JudgmentCache
from mechvalue.lm.prompts import raw, tokenize

__all__ = ["ActivationRecord", "ExplainError", "Explainer", "NeuronRecords", "check_neurons", "clean_texts",
           "discretize", "explain_neurons", "explanation_prompt", "format_examples", "neuron_records",
           "parse_explanation", "parse_simulation", "random_neurons", "scan_activations", "select_records",
           "show_token", "simulation_prompt", "simulation_score", "summarize"]


class ExplainError(MechvalueError):
    """The explainer endpoint cannot be used, or requests failed after their retry budgets."""


# ------------------------------------------------------------------ activation records (model side)

@dataclass
class NeuronRecords:
    """A neuron's texts: ``explanation`` (top texts of the explanation half, best first), ``simulation`` (top
    then random texts of the held-out half) and ``max_act`` (the max over the explanation half, which the 0-10
    scale is relative to)."""

    layer: int
    index: int
    explanation: list[ActivationRecord]
    simulation: list[ActivationRecord]
    max_act: float


def check_neurons(model, neurons: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(layer, index)`` pairs checked against the model (negative layers count from the end), duplicates dropped;
    :class:`HookError` names a layer or index the model does not have."""
    d_mlp, out = model.cfg.d_mlp, []
    for item in neurons:
        if not isinstance(item, Sequence) or len(item) != 2:
            raise HookError(f"a neuron is a (layer, index) pair, got {item!r}")
        layer, index = item
        layer = check_layers(model, int(layer) if isinstance(layer, np.integer) else layer)[0]
        index = int(index) if isinstance(index, np.integer) else index
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < d_mlp:
            raise HookError(f"neuron index {index!r} does not exist: layer {layer} has {d_mlp} neurons "
                            f"(0..{d_mlp - 1})")
        out.append((layer, index))
    return list(dict.fromkeys(out))


def random_neurons(model, targets: Sequence[tuple[int, int]], n: int, seed: int = 0) -> list[tuple[int, int]]:
    """``n`` distinct random neurons of the targets' layers (layer drawn uniformly among them), none a target."""
    layers = sorted({layer for layer, _ in targets})
    free = len(layers) * model.cfg.d_mlp - len(set(targets))
    if n < 0 or n > free:
        raise MechvalueError(f"cannot draw {n} random neurons: the target layers {layers} have {free} other neurons")
    rng, taken, out = random.Random(seed), set(targets), []
    while len(out) < n:
        key = (rng.choice(layers), rng.randrange(model.cfg.d_mlp))
        if key not in taken:
            taken.add(key)
            out.append(key)
    return out


def clean_texts(texts: Sequence[str] | None) -> list[str]:
    """Non-blank texts, duplicates dropped (``None``: :func:`~mechvalue.evaluate.audit.default_texts`); at least 2."""
    texts = default_texts() if texts is None else [texts] if isinstance(texts, str) else list(texts)
    out = list(dict.fromkeys(t for t in texts if isinstance(t, str) and t.strip()))
    if len(out) < 2:
        raise DataError(f"need at least 2 distinct non-blank texts (an explanation and a held-out half), got "
                        f"{len(out)}")
    return out


@torch.inference_mode()
def scan_activations(model, texts: Sequence[str], neurons: Sequence[tuple[int, int]], *, batch_size: int = 16,
                     max_length: int = 64, progress: bool = False) -> list[dict]:
    """Every text's per-token ``hook_post`` activations of ``neurons`` (checked ``(layer, index)`` pairs).

    One dict per text: ``{"text", "tokens"`` (str per token, special tokens left out), ``"acts"``
    (``[pos, neuron]`` float32 on the CPU, columns in the order of ``neurons``)``}``. One forward pass per
    batch reads all neurons, stopping after the last layer needed.
    """
    from tqdm.auto import tqdm

    if batch_size < 1 or max_length < 1:
        raise MechvalueError(f"need batch_size >= 1 and max_length >= 1, got {batch_size} and {max_length}")
    if not neurons:
        raise MechvalueError("no neurons to read")
    by_hook: dict[str, tuple[list[int], list[int]]] = {}
    for col, (layer, index) in enumerate(neurons):
        cols, idx = by_hook.setdefault(mlp_hook(layer), ([], []))
        cols.append(col)
        idx.append(index)
    for name in by_hook:
        check_hook(model, name)
    stop = max(layer for layer, _ in neurons) + 1
    tok, device, out = model.tokenizer, next(model.parameters()).device, []
    for start in tqdm(range(0, len(texts), batch_size), disable=not progress, desc="reading texts", unit="batch"):
        chunk = list(texts[start:start + batch_size])
        batch = tokenize(tok, [raw(t) for t in chunk], span="all", skip_special=True, padding_side="right",
                         max_length=max_length)
        _, cache = model.run_with_cache(batch.tokens.to(device), attention_mask=batch.attention_mask.to(device),
                                        names_filter=list(by_hook), stop_at_layer=stop)
        acts = torch.zeros(*batch.tokens.shape, len(neurons))  # [batch, pos, neuron]
        for name, (cols, idx) in by_hook.items():
            acts[..., cols] = cache[name][..., idx].float().cpu()
        for r, text in enumerate(chunk):
            mask = batch.read_mask[r]
            out.append({"text": text, "tokens": [tok.decode([i]) for i in batch.tokens[r][mask].tolist()],
                        "acts": acts[r][mask]})
    return out


def select_records(scan: Sequence[dict], column: int, *, layer: int = -1, index: int = -1, n_explain: int = 10,
                   n_top_holdout: int = 5, n_random_holdout: int = 5, seed: int = 0) -> NeuronRecords:
    """Column ``column`` of a :func:`scan_activations` result split into explanation and simulation records.

    A seeded shuffle splits the texts in halves (the first ceil(n/2) explain); the explanation records are the
    top ``n_explain`` of that half by max activation; the simulation records the top ``n_top_holdout`` of the
    held-out half and ``n_random_holdout`` random others of it.
    """
    if min(n_explain, n_top_holdout + n_random_holdout) < 1 or min(n_top_holdout, n_random_holdout) < 0:
        raise MechvalueError("need n_explain >= 1, n_top_holdout, n_random_holdout >= 0 and at least one held-out "
                             f"text; got {n_explain}, {n_top_holdout}, {n_random_holdout}")
    if len(scan) < 2:
        raise DataError(f"need at least 2 texts to split into explanation and held-out halves, got {len(scan)}")
    order = list(range(len(scan)))
    random.Random(seed).shuffle(order)
    half = (len(order) + 1) // 2
    maxes = [float(s["acts"][:, column].max()) for s in scan]

    def best(ids: list[int]) -> list[int]:
        return sorted(ids, key=lambda i: (-maxes[i], i))

    explain, held = best(order[:half])[:n_explain], best(order[half:])
    rest = sorted(held[n_top_holdout:])
    sim = held[:n_top_holdout] + random.Random(seed + 1).sample(rest, min(n_random_holdout, len(rest)))

    def rec(i: int) -> ActivationRecord:
        return ActivationRecord(scan[i]["text"], scan[i]["tokens"], scan[i]["acts"][:, column].clone())

    return NeuronRecords(layer, index, [rec(i) for i in explain], [rec(i) for i in sim],
                         max(maxes[i] for i in order[:half]))


def neuron_records(model, layer: int, index: int, texts: Sequence[str] | None, *, n_explain: int = 10,
                   n_top_holdout: int = 5, n_random_holdout: int = 5, seed: int = 0, max_length: int = 64,
                   batch_size: int = 16) -> NeuronRecords:
    """Neuron ``(layer, index)``'s explanation and simulation records on ``texts`` (see :func:`select_records`)."""
    ((layer, index),) = check_neurons(model, [(layer, index)])
    scan = scan_activations(model, clean_texts(texts), [(layer, index)], batch_size=batch_size,
                            max_length=max_length)
    return select_records(scan, 0, layer=layer, index=index, n_explain=n_explain, n_top_holdout=n_top_holdout,
                          n_random_holdout=n_random_holdout, seed=seed)


# ------------------------------------------------------------------ the endpoint


class Explainer:
    """Explainer and simulator on an OpenAI-compatible chat endpoint (see the module doc).

    Args:
        base_url, model, api_key: endpoint; default ``$OPENAI_BASE_URL``, ``$MECHVALUE_EXPLAIN_MODEL``,
            ``$OPENAI_API_KEY``. ``config`` (a :class:`ClientConfig`) sets the timeout and retry budgets;
            explicit arguments override it.
        cache: JSONL path of the reply cache (None: in memory only).
        concurrency: requests in flight at once.
        temperature, max_tokens: sampling of explanations (``max_tokens`` caps an explanation's length).
        sim_max_tokens: cap of a simulation reply (default: 6 per token + 16).
        progress: tqdm bars over the requests.

    ``stats`` counts ``requests``, ``retries``, ``malformed`` (unreadable HTTP replies, retried), ``cache_hits``,
    ``failed`` (retry budgets spent), ``unusable`` (replies with no explanation or no readable line, re-asked)
    and ``kept_unusable`` (still unusable after the re-asks, kept).
    """

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str | None = None, *,
                 cache: str | os.PathLike | None = None, concurrency: int = 4, temperature: float = 0.0,
                 max_tokens: int = 64, sim_max_tokens: int | None = None, config: ClientConfig | None = None,
                 seed: int = 0, progress: bool = False):
        import openai

        if concurrency < 1 or max_tokens < 1 or (sim_max_tokens is not None and sim_max_tokens < 1):
            raise ExplainError(f"need concurrency >= 1, max_tokens >= 1 and sim_max_tokens >= 1; got {concurrency}, "
                               f"{max_tokens}, {sim_max_tokens}")
        resolved = endpoint_config(base_url, model, api_key, config, model_env="MECHVALUE_EXPLAIN_MODEL")
        if resolved is None:
            raise ExplainError("no explainer endpoint configured: needs a base URL (--base-url or $OPENAI_BASE_URL) "
                               "and a model name (--explainer-model or $MECHVALUE_EXPLAIN_MODEL)")
        self.config = resolved
        self.concurrency, self.temperature, self.max_tokens = concurrency, temperature, max_tokens
        self.sim_max_tokens, self.progress = sim_max_tokens, progress
        self.cache = JudgmentCache(cache)
        self.stats: Counter = Counter()
        self._lock, self._rng = threading.Lock(), random.Random(seed)
        self._client = openai.OpenAI(base_url=self.config.base_url, api_key=self.config.key, max_retries=0,
                                     timeout=self.config.timeout)

    def _count(self, **kw: int) -> None:
        with self._lock:
            self.stats.update(kw)

    def _params(self, max_tokens: int) -> dict:
        return {"temperature": self.temperature, "max_tokens": max_tokens}

    def key(self, prompt: str, max_tokens: int) -> str:
        blob = json.dumps({"model": self.config.model, "prompt": prompt, "params": self._params(max_tokens)},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _request(self, prompt: str, max_tokens: int) -> str:
        def send() -> str:
            resp = self._client.chat.completions.create(
                model=self.config.model, messages=[{"role": "user", "content": prompt}], **self._params(max_tokens))
            content = resp.choices[0].message.content
            if not isinstance(content, str):
                raise MalformedReply("reply has no text")
            return content

        def fatal(err: str) -> ExplainError:
            return ExplainError(f"{self.config.base_url} answered {err}; check the base URL, the explainer model "
                                "and the API key")

        return call_with_retries(self.config, send, count=self._count, rng=self._rng, lock=self._lock, fatal=fatal,
                                 retry_malformed=True)

    def _ask(self, key: str, task: str, prompt: str, max_tokens: int, usable: Callable[[str], bool]) -> None:
        for _ in range(self.config.max_malformed + 1):
            reply = self._request(prompt, max_tokens)
            if usable(reply):
                break
            self._count(unusable=1)
        else:
            self._count(kept_unusable=1)
        self.cache.put(key, {"model": self.config.model, "task": task, "prompt": prompt, "reply": reply,
                             "time": time.time()})

    def _replies(self, task: str, jobs: list[tuple[str, int, Callable[[str], bool]]]) -> list[str]:
        """The reply to each ``(prompt, max_tokens, usable)`` job: cached, else asked on ``concurrency`` threads."""
        from tqdm.auto import tqdm

        keys = [self.key(p, m) for p, m, _ in jobs]
        todo = {k: job for k, job in zip(keys, jobs) if k not in self.cache}
        self._count(cache_hits=sum(k in self.cache for k in keys))  # per job: a repeated prompt is asked once
        failures: list[str] = []
        if todo:
            pool = ThreadPoolExecutor(min(self.concurrency, len(todo)))
            try:
                futures = [pool.submit(self._ask, k, task, *job) for k, job in todo.items()]
                for fut in tqdm(as_completed(futures), total=len(futures), disable=not self.progress,
                                desc=f"{task} ({self.config.model})"):
                    try:
                        fut.result()
                    except GiveUp as exc:
                        failures.append(str(exc))
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        self._count(failed=len(failures))
        if failures:
            where = f"cached in {self.cache.path}" if self.cache.path else "kept in this explainer's memory"
            raise ExplainError(f"{len(failures)} of {len(todo)} {task} requests failed after their retry budgets "
                               f"(first: {failures[0]}); the others are {where}: rerun to resume")
        return [self.cache.get(k)["reply"] for k in keys]

    def explain_many(self, record_sets: Sequence[Sequence[ActivationRecord]]) -> list[str]:
        """One explanation per record set ("" when the explainer gave none after the re-asks)."""
        def usable(reply: str) -> bool:
            return bool(parse_explanation(reply))

        replies = self._replies("explain", [(explanation_prompt(r), self.max_tokens, usable) for r in record_sets])
        return [parse_explanation(x) for x in replies]

    def simulate_many(self, jobs: Sequence[tuple[str, Sequence[ActivationRecord]]]
                      ) -> list[list[tuple[Float[Tensor, " pos"], int]]]:
        """For each ``(explanation, simulation records)``: per record, the predicted ``[pos]`` activations and the
        count of unparsed reply lines (:func:`parse_simulation`)."""
        flat = [(e, r.tokens) for e, recs in jobs for r in recs]
        reqs = [(simulation_prompt(e, t), self.sim_max_tokens or 6 * len(t) + 16,
                 lambda x, t=t: bool(torch.isfinite(parse_simulation(x, t)[0]).any())) for e, t in flat]
        parsed = iter([parse_simulation(x, t) for x, (_, t) in zip(self._replies("simulate", reqs), flat)])
        return [[next(parsed) for _ in recs] for _, recs in jobs]

    def explain(self, records: NeuronRecords | Sequence[ActivationRecord]) -> str:
        """The explanation phrase of a neuron from its explanation records."""
        return self.explain_many([records.explanation if isinstance(records, NeuronRecords) else records])[0]

    def simulate(self, explanation: str, records: NeuronRecords | Sequence[ActivationRecord]) -> list[Tensor]:
        """Predicted activations ``[pos]`` (0-10, NaN where missing) of each simulation record."""
        recs = records.simulation if isinstance(records, NeuronRecords) else records
        return [p for p, _ in self.simulate_many([(explanation, recs)])[0]]


# ------------------------------------------------------------------ the whole procedure

def explain_neurons(model, neurons: Sequence[tuple[int, int]], texts: Sequence[str] | None, explainer: Explainer, *,
                    n_random: int = 5, seed: int = 0, n_explain: int = 10, n_top_holdout: int = 5,
                    n_random_holdout: int = 5, max_length: int = 64, batch_size: int = 16,
                    progress: bool = True) -> pd.DataFrame:
    """Explain and score ``neurons`` and ``n_random`` random neurons of their layers (the baseline).

    One row per neuron: layer, index, kind (``"target"`` / ``"random"``), explanation, score (Pearson r of the
    simulation, NaN when undefined), note (why a score is NaN, or that the neuron never fired), n_sim_tokens
    (tokens with a prediction), unparsed (simulator lines not read), max_act (over the explanation half) and
    top_example (the best explanation text with its max token marked ``[[token]]``).
    """
    targets = check_neurons(model, neurons)
    if not targets:
        raise MechvalueError("no neurons to explain")
    if not isinstance(explainer, Explainer):
        raise MechvalueError(f"explainer must be an Explainer, got a {type(explainer).__name__}")
    texts = clean_texts(texts)
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
        raise MechvalueError(f"n_random must be an integer >= 0, got {n_random!r}")
    chosen = targets + random_neurons(model, targets, n_random, seed)
    scan = scan_activations(model, texts, chosen, batch_size=batch_size, max_length=max_length, progress=progress)
    recs = [select_records(scan, c, layer=lay, index=i, n_explain=n_explain, n_top_holdout=n_top_holdout,
                           n_random_holdout=n_random_holdout, seed=seed) for c, (lay, i) in enumerate(chosen)]
    explanations = explainer.explain_many([r.explanation for r in recs])
    asked = [k for k, e in enumerate(explanations) if e]
    sims = dict(zip(asked, explainer.simulate_many([(explanations[k], recs[k].simulation) for k in asked])))
    rows = []
    for k, rec in enumerate(recs):
        preds = sims.get(k, [])
        score, note = score_with_note([r.acts for r in rec.simulation], [p for p, _ in preds]) if preds else (
            float("nan"), "no explanation")
        if rec.max_act <= 0:
            note = "; ".join(filter(None, [note, "never positive on the explanation texts"]))
        top = rec.explanation[0]
        rows.append({"layer": rec.layer, "index": rec.index, "kind": "target" if k < len(targets) else "random",
                     "explanation": explanations[k], "score": score, "note": note,
                     "n_sim_tokens": int(sum(torch.isfinite(p).sum() for p, _ in preds)),
                     "unparsed": int(sum(u for _, u in preds)), "max_act": rec.max_act,
                     "top_example": mark_max({"tokens": top.tokens, "acts": top.acts.tolist()})})
    return pd.DataFrame(rows)
