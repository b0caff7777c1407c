"""ValueLocate (Su et al., arXiv 2505.17712): value neurons from activation-probability
differences between opposing higher-order dimensions, and their causal test.

Location (methods.md §3.4): for each opposing pair (openness to change vs conservation,
self-transcendence vs self-enhancement), per-neuron activation probability
``p = share of read tokens with hook_pre > 0`` on each side's scenario questions,
``delta = p_A - p_B``, and the sets ``delta > tau`` / ``delta < -tau`` (tau = 0.03).
Manipulation (§3.5): scale the selected neurons' ``hook_post`` statically, dynamically
(``gamma = 1 + lam |delta| / max|delta|``) or set them to the target side's mean; optionally
divide the opposite side's neurons by the same factor. Which parts are inferred rather than
the paper's is listed in methods.md §3.10 (the definition of p, the input format, gamma).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mechvalue.analysis.neurons import NeuronSet, activation_prob_delta, matched_random, threshold_sets, top_k
from mechvalue.core.errors import MechvalueError, UsageError
from mechvalue.core.values import OPPOSING_DIMENSIONS, canonical_dimension
from mechvalue.data.bundled import load_descriptions, load_scenarios
from mechvalue.interventions.install import ScaleNeurons, SetNeurons
from mechvalue.lm.collect import ActivationStats, collect, merge_stats
from mechvalue.lm.prompts import chat

INPUT_MODES = ("question", "description+question")


@dataclass
class ValueLocateConfig:
    """Settings (defaults are methods.md §3.7's; ``input_mode`` default recorded in results)."""

    tau: float = 0.03
    input_mode: str = "description+question"
    span: str = "prompt"
    max_questions: int | None = None
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self):
        if self.input_mode not in INPUT_MODES:
            raise MechvalueError(f"input_mode must be one of {INPUT_MODES}, not {self.input_mode!r}")
        if not isinstance(self.tau, int | float) or not 0 < self.tau < 1:  # also rejects NaN
            raise UsageError(f"tau must be in (0, 1), got {self.tau}")
        if self.max_questions is not None and self.max_questions < 1:
            raise UsageError(f"max_questions must be >= 1 (or None for all), got {self.max_questions}")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {self.batch_size}")


def dimension_examples(dimension: str, config: ValueLocateConfig):
    """Chat examples for one dimension: the question as the user turn, the description as system text."""
    dimension = canonical_dimension(dimension)
    questions = load_scenarios(dimension)
    if config.max_questions is not None:
        rng = np.random.default_rng(config.seed)
        keep = np.sort(rng.permutation(len(questions))[:config.max_questions])
        questions = [questions[i] for i in keep]
    if config.input_mode == "question":
        return [chat(q.question) for q in questions]
    desc = {d.id: d.description for d in load_descriptions(dimension)}
    return [chat(q.question, system=desc[q.description_id]) for q in questions]


@dataclass
class ValueLocateResult:
    """Per-dimension statistics, per-axis deltas and the four neuron sets."""

    stats: dict[str, ActivationStats]
    deltas: dict[str, torch.Tensor]  # "A|B" -> [layer, d_mlp]
    sets: dict[str, NeuronSet]  # dimension -> neurons firing more for it than for its opposite
    config: ValueLocateConfig
    n_layers: int
    d_mlp: int
    layers: list[int] = field(default_factory=list)
    null_deltas: dict[str, torch.Tensor] = field(default_factory=dict)  # "A|B" -> [2, layer, d_mlp]

    def fraction_selected(self) -> float:
        union = set().union(*(s.keys() for s in self.sets.values()))
        return len(union) / (self.n_layers * self.d_mlp)

    def fraction_vs_tau(self, taus=(0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15)) -> pd.DataFrame:
        """Share of all MLP neurons selected (either side, either axis) per tau, and the share the
        same rule selects from the split-half null (``null_fraction``: chance level) when available."""
        rows = []
        total = self.n_layers * self.d_mlp
        for tau in taus:
            keys = set()
            for delta in self.deltas.values():
                a, b = threshold_sets(delta, tau, self.layers)
                keys |= a.keys() | b.keys()
            row = {"tau": tau, "n_selected": len(keys), "fraction": len(keys) / total}
            if self.null_deltas:  # the same union over axes, on each of the two null draws, averaged
                draws = [torch.stack([(n[d].abs() > tau) for n in self.null_deltas.values()]).any(0).sum()
                         for d in (0, 1)]
                row["null_fraction"] = float(sum(draws)) / 2 / total
            rows.append(row)
        return pd.DataFrame(rows)

    def layer_counts(self) -> pd.DataFrame:
        """Selected neurons per layer and set, with relative depth ``l / (n_layers - 1)``."""
        rows = []
        for name, s in self.sets.items():
            counts = s.counts_per_layer(self.n_layers)
            for layer in range(self.n_layers):
                rows.append({"set": name, "layer": layer, "relative_depth": layer / max(1, self.n_layers - 1),
                             "count": int(counts[layer])})
        return pd.DataFrame(rows)

    def overlaps(self) -> pd.DataFrame:
        names = list(self.sets)
        return pd.DataFrame([[self.sets[a].jaccard(self.sets[b]) for b in names] for a in names],
                            index=names, columns=names)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        for name, s in self.sets.items():
            s.save(folder / f"neurons_{name}.safetensors")
        for name, st in self.stats.items():
            st.save(folder / f"stats_{name}.safetensors")
        return folder


def locate(model, config: ValueLocateConfig | None = None, *, stats: dict[str, ActivationStats] | None = None,
           progress: bool = True) -> ValueLocateResult:
    """Collect activation probabilities per dimension (or reuse ``stats``) and select the value neurons.

    Each dimension is read in two halves (alternate questions), merged for the statistics; the
    halves also give a chance-level reference: ``null_deltas[A|B]`` holds
    ``(p_A1 - p_A2) / sqrt(2)`` (and likewise for B, stacked), whose spread matches that of
    ``p_A - p_B`` when the two sides do not differ. ``fraction_vs_tau`` reports the share of
    neurons the same threshold selects from it.
    """
    config = config or ValueLocateConfig()
    stats = dict(stats or {})
    null_parts: dict[str, torch.Tensor] = {}
    for a, b in OPPOSING_DIMENSIONS:
        for dim in (a, b):
            if dim not in stats:
                ex = dimension_examples(dim, config)
                if len(ex) < 2:
                    raise MechvalueError(f"{dim}: need at least 2 questions, got {len(ex)}")
                halves = [collect(model, ex[h::2], span=config.span, resid=False, batch_size=config.batch_size,
                                  desc=f"valuelocate:{dim}:{h + 1}/2", progress=progress) for h in (0, 1)]
                stats[dim] = merge_stats(*halves)
                null_parts[dim] = (halves[0].act_prob - halves[1].act_prob) / 2 ** 0.5
    layers = stats[OPPOSING_DIMENSIONS[0][0]].layers
    deltas, sets, null = {}, {}, {}
    for a, b in OPPOSING_DIMENSIONS:
        delta = activation_prob_delta(stats[a].act_prob, stats[b].act_prob)
        deltas[f"{a}|{b}"] = delta
        if a in null_parts and b in null_parts:
            null[f"{a}|{b}"] = torch.stack([null_parts[a], null_parts[b]])  # [2, layer, d_mlp]
        sets[a], sets[b] = threshold_sets(delta, config.tau, layers, names=(a, b), opposite_of=None,
                                          config=asdict(config))
    return ValueLocateResult(stats, deltas, sets, config, model.cfg.n_layers, model.cfg.d_mlp, layers, null)


def manipulation_specs(neurons: NeuronSet, *, mode: str = "static", gamma: float = 2.0, lam: float = 2.0,
                       means: torch.Tensor | None = None, suppress: NeuronSet | None = None,
                       positions: str = "all") -> list:
    """Specs that scale ``neurons`` (ValueLocate's manipulation).

    mode: ``"static"`` (x gamma), ``"dynamic"`` (x (1 + lam |delta| / max|delta|), the set's
    scores being the deltas), ``"set_to_mean"`` (overwrite with ``means[layer, i]``, the
    target side's mean ``hook_post``). ``suppress``: divide those neurons by the same factor.
    """
    specs = []
    max_score = float(neurons.scores.abs().max()) if len(neurons) else 1.0
    for layer, idx in neurons.by_layer().items():
        if mode == "static":
            specs.append(ScaleNeurons(layer, idx, gamma, positions=positions))
        elif mode == "dynamic":
            member = neurons.layers == layer
            order = neurons.indices[member].argsort()
            s = neurons.scores[member][order].abs()
            specs.append(ScaleNeurons(layer, idx, 1.0 + lam * s / max_score, positions=positions))
        elif mode == "set_to_mean":
            if means is None:
                raise MechvalueError("mode='set_to_mean' needs means=[n_layers, d_mlp] (target side's mean hook_post)")
            specs.append(SetNeurons(layer, idx, means[layer, idx], positions=positions))
        else:
            raise MechvalueError(f"mode must be 'static', 'dynamic' or 'set_to_mean', not {mode!r}")
    if suppress is not None and mode != "set_to_mean":
        for layer, idx in suppress.by_layer().items():
            factor = 1.0 / gamma if mode == "static" else 1.0 / (1.0 + lam)
            specs.append(ScaleNeurons(layer, idx, factor, positions=positions))
    return specs


def baseline_sets(result: ValueLocateResult, dimension: str) -> dict[str, NeuronSet]:
    """Comparison locators with the same budget as ValueLocate's set for ``dimension``.

    ``mean_diff``: largest mean ``hook_post`` difference (dimension minus opposite);
    ``magnitude``: largest mean |activation| proxy (mean hook_post on the dimension);
    ``random``: matched per-layer counts (seed 0).
    """
    dim = canonical_dimension(dimension)
    ref = result.sets[dim]
    opp = next(b if a == dim else a for a, b in OPPOSING_DIMENSIONS if dim in (a, b))
    diff = result.stats[dim].post_mean - result.stats[opp].post_mean
    k = len(ref)
    return {"mean_diff": top_k(diff, k, result.layers, f"mean_diff[{dim}]"),
            "magnitude": top_k(result.stats[dim].post_mean.abs(), k, result.layers, f"magnitude[{dim}]"),
            "random": matched_random(ref, result.d_mlp, seed=0)}


def _dimension_items(df: pd.DataFrame, dimension: str, column: str) -> np.ndarray:
    from mechvalue.core.values import DIMENSION_WEIGHTS

    w = DIMENSION_WEIGHTS[canonical_dimension(dimension)]
    sub = df[df.value.isin(list(w))]
    return sub[column].to_numpy()


def causal_test(model, result: ValueLocateResult, dimension: str, *, factors=(2.0,), mode: str = "static",
                n_random: int = 3, suppress_opposite: bool = False, dilemmas=None, items=None,
                baselines: dict[str, NeuronSet] | None = None, batch_size: int = 16,
                random_mode: str = "each") -> pd.DataFrame:
    """Shift of the judge-free scores of ``dimension`` and of its opposite under manipulation.

    For each factor: the located set, and ``n_random`` matched random sets (same per-layer
    counts), each compared with no manipulation on the same items (paired differences with
    bootstrap CIs); ``baselines`` (name -> set, e.g. :func:`baseline_sets`) get the same test.
    Scores: questionnaire rating (1-6) of the dimension's portrait items and dilemma
    preference (log-prob difference) of its values' dilemmas. Returns tidy rows.

    ``random_mode="assigned"`` scores item ``i`` under random set ``i mod n_random`` instead of every item under
    every set (one arm ``random_pooled``: ``n_random`` draws at the cost of one), so many draws stay affordable.
    """
    if random_mode not in ("each", "assigned"):
        raise MechvalueError(f"random_mode must be 'each' or 'assigned', not {random_mode!r}")
    from mechvalue.analysis.metrics import paired_difference
    from mechvalue.evaluate.scores import dilemma_preference, questionnaire

    dim = canonical_dimension(dimension)
    opp = next(b if a == dim else a for a, b in OPPOSING_DIMENSIONS if dim in (a, b))
    target = result.sets[dim]
    if len(target) == 0:
        raise MechvalueError(f"no neurons selected for {dim} at tau={result.config.tau}; lower tau")

    from mechvalue.core.values import DIMENSION_WEIGHTS
    from mechvalue.data.bundled import load_dilemmas, load_portraits

    relevant = set(DIMENSION_WEIGHTS[dim]) | set(DIMENSION_WEIGHTS[opp])  # score only what is reported
    items = [i for i in (items if items is not None else load_portraits()) if i.value in relevant]
    dilemmas = [d for d in (dilemmas if dilemmas is not None else load_dilemmas()) if d.value in relevant]

    def assigned(fn, rows, spec_list):
        """``fn`` over ``rows`` with row ``i`` under ``spec_list[i mod k]``, in the original order."""
        parts = [fn(model, rows[j::len(spec_list)], sp, batch_size=batch_size).assign(_i=range(j, len(rows),
                 len(spec_list))) for j, sp in enumerate(spec_list) if rows[j::len(spec_list)]]
        return pd.concat(parts).sort_values("_i").drop(columns="_i").reset_index(drop=True)

    def scores(specs, spec_list=None):
        if spec_list is None:
            q = questionnaire(model, items, specs, batch_size=batch_size)
            d = dilemma_preference(model, dilemmas, specs, batch_size=batch_size)
        else:
            q, d = assigned(questionnaire, items, spec_list), assigned(dilemma_preference, dilemmas, spec_list)
        return {(which, metric): _dimension_items(df, which, col)
                for which in (dim, opp) for metric, df, col in (("questionnaire", q, "score"),
                                                                ("dilemma_pref", d, "pref"))}

    base = scores(())
    rows = []
    for factor in factors:
        arms = {"valuelocate": target}
        randoms = {f"random#{s}": matched_random(target, result.d_mlp, seed=s, exclude=target) for s in range(n_random)}
        if random_mode == "each":
            arms.update(randoms)
        elif randoms:
            arms["random_pooled"] = list(randoms.values())
        arms.update(baselines or {})
        for arm, neurons in arms.items():
            suppress = result.sets[opp] if suppress_opposite and arm == "valuelocate" else None
            if isinstance(neurons, list):  # the assigned random draws
                steered = scores(None, [manipulation_specs(n, mode=mode, gamma=factor, lam=factor)
                                        for n in neurons])
                neurons = neurons[0]
            else:
                steered = scores(manipulation_specs(neurons, mode=mode, gamma=factor, lam=factor, suppress=suppress))
            for (which, metric), vals in steered.items():
                est, lo, hi = paired_difference(vals, base[(which, metric)])
                method = "random_neurons" if arm.startswith("random") else arm
                rows.append({"method": method, "arm": arm,
                             "target": dim, "value": which, "metric": f"delta_{metric}", "factor": factor,
                             "estimate": est, "ci_low": lo, "ci_high": hi, "n": len(vals),
                             "n_neurons": len(neurons), "n_controls": n_random if arm.startswith("random") else 0})
    return pd.DataFrame(rows)
