"""Dual mechanisms, part 1: configuration and the labelled responses (methods.md §5.1-5.2).

:class:`DualConfig`, the JSONL caches, and the responses to neutral queries without a system
prompt (intrinsic) and under value-priority system prompts (prompted), labelled by a judge.
Re-exported by :mod:`mechvalue.methods.dual`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mechvalue.core.errors import CorruptFileError, MechvalueError
from mechvalue.core.values import VALUES, canonical_list
from mechvalue.data.bundled import load_queries, load_system_prompts
from mechvalue.lm.generation import generate
from mechvalue.lm.models import model_info
from mechvalue.lm.prompts import chat

VECTOR_TYPES = ("intrinsic", "prompted", "intrinsic_perp", "prompted_perp")
CONTRASTS = ("within", "vs_intrinsic")
NORMALIZE = ("none", "unit", "unit_mean_norm")
#: extra columns of the steering rows, after :data:`mechvalue.analysis.metrics.RESULT_COLUMNS`
STEERING_EXTRAS = ("arm", "vector_type", "neuron_class", "alpha", "beta", "seed", "norm", "n_neurons", "ead_vocab",
                   "alpha_source")


@dataclass
class DualConfig:
    """All knobs of the pipeline (defaults sized for SmolLM2-135M on a CPU; see :meth:`quick`).

    ``layer`` (None: ``n_layers // 2``) is where neurons are classified and vectors steer;
    ``layers`` (None: all) where vectors are extracted. ``steer_values`` (None: every value of
    the run) are the preferred values for causal tests, then the run's other values; the first
    ``max_steer`` (None: all) with defined vectors are tested. ``alpha`` set skips the MMLU calibration over ``alphas``.
    ``top_frac`` is 5% rather than methods.md's 1%: 1% of SmolLM2's 1,536 neurons leaves 1-5 per class.
    """

    n_queries: int = 48
    max_new_tokens: int = 32
    temperature: float = 0.7
    batch_size: int = 32
    layers: tuple[int, ...] | None = None
    layer: int | None = None
    hook: str = "hook_resid_post"
    threshold: float | None = None
    contrast: str = "within"
    min_group: int = 2
    normalize_axes: bool = True
    top_frac: float = 0.05
    max_angle: float = 30.0
    signed: bool = True
    steer_values: tuple[str, ...] | None = ("benevolence", "achievement", "universalism", "power")
    max_steer: int | None = 1
    steer_normalize: str = "none"
    alphas: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    alpha: float | None = None
    max_mmlu_drop: float = 0.05
    n_mmlu: int = 20
    betas: tuple[float, ...] = (4.0,)
    n_random: int = 10
    n_items: int = 8
    n_dilemmas: int = 6
    n_diversity: int = 6
    diversity_tokens: int = 32
    n_permutations: int = 1000
    angles_path: str | None = None
    seed: int = 0

    def __post_init__(self):
        checks = [(self.n_queries >= 2, "n_queries must be >= 2"), (self.max_new_tokens >= 1, "max_new_tokens >= 1"),
                  (self.contrast in CONTRASTS, f"contrast must be one of {CONTRASTS}"),
                  (self.steer_normalize in NORMALIZE, f"steer_normalize must be one of {NORMALIZE}"),
                  (self.min_group >= 1, "min_group must be >= 1"),
                  (self.max_steer is None or self.max_steer >= 1, "max_steer must be None or >= 1"),
                  (len(self.alphas) > 0, "alphas is empty"),
                  (all(a > 0 for a in self.alphas), "alphas must be > 0"), (self.n_random >= 0, "n_random >= 0"),
                  (0 < self.max_mmlu_drop < 1, "max_mmlu_drop must be in (0, 1)"),
                  (self.n_items >= 1 and self.n_dilemmas >= 1, "n_items and n_dilemmas must be >= 1"),
                  (isinstance(self.n_permutations, int) and self.n_permutations >= 1,
                   f"n_permutations must be an integer >= 1, got {self.n_permutations!r}")]
        for ok, msg in checks:
            if not ok:
                raise MechvalueError(f"DualConfig: {msg}")

    @classmethod
    def quick(cls, **overrides) -> DualConfig:
        """A very small preset for smoke runs (about a minute of CPU on SmolLM2; no diversity generations)."""
        base = dict(n_queries=4, max_new_tokens=12, min_group=1, alphas=(4.0,), n_mmlu=4, n_random=1, n_items=2,
                    n_dilemmas=2, n_diversity=0, n_permutations=200)
        return cls(**{**base, **overrides})


# ------------------------------------------------------------------ small helpers

def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL cache; a torn last line (crash mid-append) is ignored."""
    if not path.exists():
        return []
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if k < len(lines) - 1:
                raise CorruptFileError(f"{path}:{k + 1}: invalid JSON ({exc.msg}); delete the file") from exc
    return rows


def _append_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and (data := path.read_bytes()) and not data.endswith(b"\n"):
        path.write_bytes(data[:data.rfind(b"\n") + 1])  # drop a torn last line before appending
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        f.flush()


def judge_name(judge) -> str:
    return str(getattr(judge, "name", type(judge).__name__))


def derived_seed(*parts) -> int:
    return zlib.crc32(json.dumps(parts).encode()) & 0x7FFFFFFF


# ------------------------------------------------------------------ 1. responses and labels

def plan_responses(values: Sequence[str], config: DualConfig, queries=None) -> list[dict]:
    """Rows to generate: the sampled queries intrinsic, then per value with a sampled system prompt."""
    queries = list(queries) if queries is not None else load_queries()
    pick = np.sort(np.random.default_rng(config.seed).permutation(len(queries))[:config.n_queries])
    qs = [queries[i] for i in pick]
    rows = [{"id": f"intrinsic|{q.id}", "condition": "intrinsic", "value": None, "query_id": q.id,
             "query": q.text, "system": None, "system_id": None} for q in qs]
    for v in canonical_list(values):
        prompts = load_system_prompts(v)
        rng = np.random.default_rng([config.seed, VALUES.index(v)])
        for q in qs:
            sp = prompts[int(rng.integers(len(prompts)))]
            rows.append({"id": f"prompted:{v}|{q.id}", "condition": "prompted", "value": v, "query_id": q.id,
                         "query": q.text, "system": sp.text, "system_id": sp.id})
    return rows


def generate_responses(model, plan: Sequence[dict], path: str | Path, *, config: DualConfig,
                       progress: bool = True) -> list[dict]:
    """Generate the planned rows not yet in ``path`` (JSONL, appended per batch); return all rows in plan order.

    The plan is cut into batches of ``config.batch_size`` rows (conditions mixed: fewer sequential
    decoding steps) with a seed per batch, so a resumed run produces the same texts as an
    uninterrupted one. Rows made with other generation settings are refused.
    """
    path = Path(path)
    info = model_info(model)
    settings = {"model_id": info.get("model_id"), "processing": info.get("processing"),
                "max_new_tokens": config.max_new_tokens, "temperature": config.temperature, "seed": config.seed}
    done = {r["id"]: r for r in _read_jsonl(path)}
    for r in done.values():
        if r.get("settings") != settings:
            raise CorruptFileError(f"{path}: response {r['id']!r} was generated with {r.get('settings')}, not "
                                   f"{settings}; use another output folder or delete the file")
    chunks = [list(plan[k:k + config.batch_size]) for k in range(0, len(plan), config.batch_size)]
    todo = [(k, ch) for k, ch in enumerate(chunks) if any(r["id"] not in done for r in ch)]
    for k, rows in tqdm(todo, desc="dual:generate", disable=not progress):
        gen = generate(model, [chat(r["query"], system=r["system"]) for r in rows],
                       max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                       seed=derived_seed(config.seed, k), batch_size=config.batch_size)
        new = [{**r, "response": t, "n_tokens": len(toks), "settings": settings}
               for r, t, toks in zip(rows, gen.texts, gen.tokens) if r["id"] not in done]
        _append_jsonl(path, new)
        done.update({r["id"]: r for r in new})
    return [done[r["id"]] for r in plan]


def label_responses(responses: Sequence[dict], judge, values: Sequence[str], path: str | Path, *,
                    threshold: float = 0.5) -> pd.DataFrame:
    """Judge scores (cached in ``path`` per judge name) and labels ``score >= threshold``.

    Intrinsic responses are labelled for every value, prompted ones for their own value; empty
    responses are skipped. Columns: id, condition, value, judge, score, label.
    """
    path, name = Path(path), judge_name(judge)
    have = {(r["id"], r["value"]): r for r in _read_jsonl(path) if r.get("judge") == name}
    kw = "questions" in inspect.signature(judge.judge).parameters
    for v in canonical_list(values):
        rows = [r for r in responses if r["response"].strip() and r["value"] in (None, v)
                and (r["id"], v) not in have]
        if not rows:
            continue
        texts = [r["response"] for r in rows]
        scores = judge.judge(texts, v, questions=[r["query"] for r in rows]) if kw else judge.judge(texts, v)
        scores = np.asarray(scores, dtype=float).reshape(-1)
        if scores.shape[0] != len(rows):
            raise MechvalueError(f"judge {name!r} returned {scores.shape[0]} scores for {len(rows)} texts")
        new = [{"id": r["id"], "condition": r["condition"], "value": v, "judge": name, "score": float(s)}
               for r, s in zip(rows, scores)]
        _append_jsonl(path, new)
        have.update({(r["id"], v): r for r in new})
    ids = {r["id"] for r in responses}
    df = pd.DataFrame([r for r in have.values() if r["id"] in ids and r["value"] in canonical_list(values)],
                      columns=["id", "condition", "value", "judge", "score"])
    df["label"] = (df["score"] >= threshold).astype(int)
    return df
