"""Bad input to the public analysis functions: a clear MechvalueError naming the problem, never a traceback
from deep inside torch/numpy/scipy/sklearn and never silent NaN or empty garbage (issue #16).

Each case is ``(call, error class, regex on the message)``; every one of them failed before the checks
(a bare RuntimeError/ValueError/IndexError/KeyError/TypeError, or a NaN/inf/empty result). The tests run
with the shape hook off (``unchecked_shapes``) to see the error a user meets.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechvalue.analysis.metrics import (
    bootstrap_ci,
    distinct_n,
    ead_n,
    leakage,
    nglr_group_group,
    nglr_target_group,
    nlr,
    paired_difference,
    repetition_rate,
)
from mechvalue.analysis.neurons import (
    NeuronSet,
    activation_prob_delta,
    angle_classes,
    matched_random,
    threshold_sets,
    top_k,
)
from mechvalue.analysis.vectors import (
    Probe,
    circumplex_fit,
    cosine,
    cosine_matrix,
    diff_in_means,
    mean_delta,
    orthogonalize,
    pair_decomposition,
    procrustes_align,
    push_amount,
    random_directions,
    svd_axes,
    train_probe,
    train_test_split,
)
from mechvalue.core.errors import MechvalueError, UsageError
from mechvalue.core.values import VALUES

NAN, INF = float("nan"), float("inf")
M = torch.ones(3, 4)
V4 = torch.ones(4)
X = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
Y = [0, 1, 0, 1, 0, 1]
TARGET = np.array([[np.cos(a), np.sin(a)] for a in np.linspace(0, 2 * np.pi, 5, endpoint=False)])
D1 = np.zeros((1, 10))
D1[0, VALUES.index("power")], D1[0, VALUES.index("security")] = 0.5, 0.1


def _nan_at(shape, index):
    t = torch.ones(shape)
    t[index] = NAN
    return t


def _neurons():
    return NeuronSet(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.zeros(2), torch.ones(2, dtype=torch.long))


def _axes():
    return svd_axes(torch.tensor([1.0, 0, 0, 0]), torch.tensor([0.0, 1, 0, 0]))


def case(call, error, match, id):
    return pytest.param(call, error, match, id=id)


VECTOR_CASES = [
    case(lambda: diff_in_means(_nan_at((2, 4), (1, 2)), M), UsageError,
         r"diff_in_means: pos has 1 NaN/inf value \(first at index \(1, 2\)\)", "diff_in_means-nan"),
    case(lambda: diff_in_means(torch.ones(2, 0), torch.ones(2, 0)), UsageError,
         r"pos must be a non-empty \[n, d\] matrix \(d >= 1\), got shape \(2, 0\)", "diff_in_means-zero-width"),
    case(lambda: cosine(torch.ones(3), V4), UsageError, r"cosine: a has width 3 .* b has width 4", "cosine-widths"),
    case(lambda: cosine(torch.ones(0), torch.ones(0)), UsageError, r"d >= 1, got shapes \(0,\)", "cosine-empty"),
    case(lambda: Probe(torch.ones(3), 0.0).logit(V4), UsageError,
         r"x has shape \(4,\), expected \[\.\.\., 3\]", "probe-logit-width"),
    case(lambda: train_probe(_nan_at((6, 3), (4, 0)), Y), UsageError,
         r"train_probe: x has 1 NaN/inf value \(first at index \(4, 0\)\)", "train_probe-nan"),
    case(lambda: train_probe(X, [0, 0.5, 1, 1, 0, 1]), UsageError, r"y must hold labels 0 and 1, got \[0\.5\]",
         "train_probe-fractional-labels"),
    case(lambda: train_probe(X, Y, C=0), UsageError, r"C must be a finite number > 0, got 0", "train_probe-C"),
    case(lambda: train_probe(X, Y, x_test=X), UsageError, r"x_test and y_test go together",
         "train_probe-x_test-alone"),
    case(lambda: train_probe(X, Y, x_test=torch.ones(2, 5), y_test=[0, 1]), UsageError,
         r"x_test has shape \(2, 5\), expected \[n, 3\]", "train_probe-x_test-width"),
    case(lambda: train_probe(X, Y, x_test=X[:2], y_test=[0, 1, 1]), UsageError,
         r"y_test has shape \(3,\): expected \[2\] labels", "train_probe-y_test-length"),
    case(lambda: train_test_split(1), UsageError, r"train_test_split: n must be an integer >= 2, got 1",
         "train_test_split-one"),
    case(lambda: push_amount(Probe(torch.ones(3), 0.0), torch.ones(3), 0.5, "up"), UsageError,
         r"direction must be 'raise' or 'lower', got 'up'", "push_amount-direction"),
    case(lambda: push_amount(Probe(torch.zeros(3), 0.0), torch.ones(3), 0.5), UsageError,
         r"probe.w is the zero vector", "push_amount-zero-probe"),
    case(lambda: orthogonalize(torch.ones(3), V4), UsageError, r"a has width 3 .* b has width 4",
         "orthogonalize-widths"),
    case(lambda: orthogonalize(torch.ones(3), torch.zeros(3)), UsageError, r"orthogonalize: b is the zero vector",
         "orthogonalize-zero"),
    case(lambda: orthogonalize(M, M), UsageError, r"a must be a non-empty \[d\] vector, got shape \(3, 4\)",
         "orthogonalize-2d"),
    case(lambda: svd_axes(torch.zeros(3), torch.ones(3)), UsageError, r"svd_axes: v_int is the zero vector",
         "svd_axes-zero"),
    case(lambda: svd_axes(torch.zeros(3), torch.zeros(3), normalize=False), UsageError, r"v_int is the zero vector",
         "svd_axes-zero-unnormalized"),
    case(lambda: svd_axes(torch.ones(3), 2 * torch.ones(3)), UsageError, r"v_int and v_prompt are parallel",
         "svd_axes-parallel"),
    case(lambda: svd_axes(torch.tensor([NAN, 1.0, 0.0]), torch.ones(3)), UsageError,
         r"v_int has 1 NaN/inf value \(first at index 0\)", "svd_axes-nan"),
    case(lambda: svd_axes(torch.ones(0), torch.ones(0)), UsageError, r"v_int must be a non-empty \[d\] vector",
         "svd_axes-empty"),
    case(lambda: mean_delta(_nan_at((3, 4), (2, 1))), UsageError, r"mean_delta: deltas has 1 NaN/inf",
         "mean_delta-nan"),
    case(lambda: circumplex_fit(torch.randn(5, 4), TARGET, n_permutations=0), UsageError,
         r"circumplex_fit: n_permutations must be an integer >= 1, got 0", "circumplex_fit-no-permutations"),
    case(lambda: circumplex_fit(torch.randn(5, 4), TARGET, n_permutations=-1), UsageError,
         r"n_permutations must be an integer >= 1, got -1", "circumplex_fit-negative-permutations"),
    case(lambda: circumplex_fit(torch.randn(2, 4), TARGET[:2]), UsageError,
         r"axes must be an \[n, d\] matrix with n >= 3 rows .*got shape \(2, 4\)", "circumplex_fit-two-values"),
    case(lambda: circumplex_fit(torch.randn(5, 1), TARGET), UsageError, r"axes has shape \(5, 1\): .* d >= 2",
         "circumplex_fit-width-one"),
    case(lambda: circumplex_fit(torch.ones(5, 4), TARGET), UsageError, r"axes \(5 rows\) has all rows equal",
         "circumplex_fit-constant"),
    case(lambda: circumplex_fit(_nan_at((5, 4), (0, 0)), TARGET), UsageError, r"axes has 1 NaN/inf",
         "circumplex_fit-nan"),
    case(lambda: circumplex_fit(torch.randn(5, 4), np.full((5, 2), np.nan)), UsageError,
         r"target_xy has 10 NaN/inf values", "circumplex_fit-nan-target"),
    case(lambda: random_directions(V4, -1), UsageError, r"random_directions: n must be an integer >= 0, got -1",
         "random_directions-negative"),
    case(lambda: random_directions(M, 2), UsageError, r"like must be a non-empty \[d\] vector, got shape \(3, 4\)",
         "random_directions-2d"),
    case(lambda: random_directions(torch.ones(0), 2), UsageError, r"like must be a non-empty \[d\] vector",
         "random_directions-empty"),
    case(lambda: pair_decomposition(torch.ones(0), torch.ones(0)), MechvalueError, r"d >= 1, got \(0,\), \(0,\)",
         "pair_decomposition-empty"),
    case(lambda: cosine_matrix(_nan_at((3, 4), (1, 1))), UsageError, r"cosine_matrix: x has 1 NaN/inf",
         "cosine_matrix-nan"),
    case(lambda: procrustes_align(np.ones((3, 2)), TARGET[:3]), UsageError, r"points \(3 rows\) has all rows equal",
         "procrustes_align-constant"),
    case(lambda: procrustes_align(np.full((3, 2), np.nan), TARGET[:3]), UsageError, r"points has 6 NaN/inf",
         "procrustes_align-nan"),
    case(lambda: procrustes_align(np.ones((3, 0)), np.ones((3, 0))), UsageError,
         r"points must be an \[n, k\] array with n >= 2, got shape \(3, 0\)", "procrustes_align-zero-width"),
]

NEURON_CASES = [
    case(lambda: NeuronSet(torch.tensor(0), torch.tensor(1), torch.tensor(0.0), torch.tensor(1)), UsageError,
         r"NeuronSet: .* must be 1-D tensors of one length \[n\], got \{'layers': \(\)", "NeuronSet-0d"),
    case(lambda: NeuronSet.from_mask(torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 4), [0, 1]), UsageError,
         r"mask \(2, 3\) and scores \(2, 4\) must be \[layer, d_mlp\] tables of one shape", "from_mask-shapes"),
    case(lambda: _neurons().counts_per_layer(1), UsageError, r"n_layers=1 but the set has neurons in layer 1",
         "counts_per_layer-too-few"),
    case(lambda: _neurons().fraction(0, 5), UsageError, r"n_layers must be an integer >= 1, got 0", "fraction-zero"),
    case(lambda: activation_prob_delta(torch.ones(3), torch.ones(3)), UsageError,
         r"p_a must be a non-empty \[n, d\] matrix .*got shape \(3,\)", "activation_prob_delta-1d"),
    case(lambda: activation_prob_delta(_nan_at((2, 3), (0, 1)), torch.ones(2, 3)), UsageError,
         r"p_a has 1 NaN/inf", "activation_prob_delta-nan"),
    case(lambda: threshold_sets(torch.ones(5), 0.1, [0]), UsageError, r"delta must be .*got shape \(5,\)",
         "threshold_sets-1d"),
    case(lambda: threshold_sets(torch.ones(2, 5), 0.1, [0]), UsageError,
         r"layers has 1 entries \(\[0\]\) but the table has 2 rows", "threshold_sets-fewer-layers"),
    case(lambda: threshold_sets(torch.ones(2, 5), 0.1, [0, 1, 2]), UsageError,
         r"layers has 3 entries .* but the table has 2 rows", "threshold_sets-more-layers"),
    case(lambda: threshold_sets(_nan_at((2, 5), (1, 4)), 0.1, [0, 1]), UsageError,
         r"delta has 1 NaN/inf value \(first at index \(1, 4\)\)", "threshold_sets-nan"),
    case(lambda: threshold_sets(torch.ones(2, 5), 0.1, [0, 1], names=("A",)), UsageError,
         r"names must be two set names", "threshold_sets-names"),
    case(lambda: top_k(torch.ones(5), 2, [0]), UsageError, r"top_k: score must be .*got shape \(5,\)", "top_k-1d"),
    case(lambda: top_k(torch.ones(2, 5), 2.5, [0, 1]), MechvalueError, r"k=2\.5 must be an integer in 0\.\.10",
         "top_k-float-k"),
    case(lambda: top_k(_nan_at((2, 5), (0, 3)), 2, [0, 1]), UsageError, r"score has 1 NaN/inf", "top_k-nan"),
    case(lambda: top_k(torch.ones(2, 5), 2, [0]), UsageError, r"layers has 1 entries", "top_k-layers"),
    case(lambda: matched_random(_neurons(), 5.0), UsageError, r"d_mlp must be an integer >= 1, got 5\.0",
         "matched_random-float-d_mlp"),
    case(lambda: matched_random(_neurons(), 2), UsageError, r"reference has neuron index 3 but d_mlp=2",
         "matched_random-index-beyond-d_mlp"),
    case(lambda: matched_random([1, 2], 5), UsageError, r"reference must be a NeuronSet, got list",
         "matched_random-not-a-set"),
    case(lambda: matched_random(_neurons(), 5, exclude=[1]), UsageError, r"exclude must be a NeuronSet, got list",
         "matched_random-exclude"),
    case(lambda: angle_classes(torch.ones(0, 4), _axes()), UsageError,
         r"w_out must be a non-empty \[n, d\] matrix .*got shape \(0, 4\)", "angle_classes-empty"),
    case(lambda: angle_classes(_nan_at((5, 4), (2, 2)), _axes()), UsageError, r"w_out has 1 NaN/inf",
         "angle_classes-nan"),
]

METRIC_CASES = [
    case(lambda: bootstrap_ci(3.0), MechvalueError, r"at least one observation: x has shape \(\)",
         "bootstrap_ci-scalar"),
    case(lambda: bootstrap_ci([1.0, 2.0, 3.0], n_boot=0), UsageError, r"n_boot must be an integer >= 1, got 0",
         "bootstrap_ci-no-resamples"),
    case(lambda: bootstrap_ci([1.0, INF, 3.0]), UsageError,
         r"bootstrap_ci: x has 1 inf value \(first at index 1\); expected finite numbers or NaN \(missing\)",
         "bootstrap_ci-inf"),
    case(lambda: paired_difference(1.0, 2.0), UsageError, r"treated must be a non-empty 1-D run .*got shape \(\)",
         "paired_difference-scalars"),
    case(lambda: paired_difference([1.0, INF], [1.0, 2.0]), UsageError, r"treated has 1 inf value",
         "paired_difference-inf"),
    case(lambda: paired_difference([[1.0, 2.0]], [[1.0, 2.0]]), UsageError, r"got shape \(1, 2\)",
         "paired_difference-2d"),
    case(lambda: leakage(D1, ["power", "benevolence"]), MechvalueError,
         r"leakage: delta must be \[targets, 10 values\] = \[2, 10\], got \(1, 10\)", "leakage-targets"),
    case(lambda: leakage(D1, ["power"], base=np.zeros(3), headroom=True), UsageError,
         r"base has shape \(3,\), expected \[10\]", "leakage-base"),
    case(lambda: leakage(np.full((1, 10), np.inf), ["power"]), UsageError, r"leakage: delta has 10 inf values",
         "leakage-inf"),
    case(lambda: nlr(D1, ["tradition"], eps=0), UsageError, r"nlr: eps must be a finite number > 0, got 0",
         "nlr-eps-zero"),
    case(lambda: nlr(D1, ["tradition"], eps=-1.0), UsageError, r"eps must be a finite number > 0, got -1",
         "nlr-eps-negative"),
    case(lambda: nlr(D1, ["tradition"], eps=NAN), UsageError, r"eps must be a finite number > 0, got nan",
         "nlr-eps-nan"),
    case(lambda: nlr(np.zeros((1, 3)), ["power"], values=VALUES[:3]), UsageError,
         r"targets \['power'\] are not among the scored values", "nlr-target-not-scored"),
    case(lambda: nglr_target_group(D1, ["power"], groups="HO5"), UsageError,
         r"groups='HO5' is not one of \[.*'HO4'", "nglr_target_group-groups"),
    case(lambda: nglr_group_group(D1, ["power"], groups="HO5"), UsageError, r"groups='HO5' is not one of",
         "nglr_group_group-groups"),
    case(lambda: nglr_group_group(D1, ["power", "benevolence"]), MechvalueError, r"= \[2, 10\], got \(1, 10\)",
         "nglr_group_group-targets"),
    case(lambda: nglr_group_group(np.zeros((1, 10)), ["power"], eps=0), UsageError,
         r"nglr_group_group: eps must be a finite number > 0", "nglr_group_group-eps-zero"),
    case(lambda: distinct_n("a b c d", 1), UsageError, r"texts must be a list of strings, got a str",
         "distinct_n-string"),
    case(lambda: distinct_n(["a b", None], 1), UsageError, r"texts\[1\] is a NoneType, expected str",
         "distinct_n-none"),
    case(lambda: distinct_n(["a b"], 0), UsageError, r"distinct_n: n must be an integer >= 1, got 0", "distinct_n-n0"),
    case(lambda: ead_n(["a b"], 0, vocab_size=10), UsageError, r"ead_n: n must be an integer >= 1", "ead_n-n0"),
    case(lambda: ead_n(["a b"], 1, vocab_size=NAN), UsageError, r"vocab_size must be an integer >= 1, got nan",
         "ead_n-vocab-nan"),
    case(lambda: repetition_rate(["a b"], 0), UsageError, r"repetition_rate: n must be an integer >= 1",
         "repetition_rate-n0"),
    case(lambda: repetition_rate([None]), UsageError, r"texts\[0\] is a NoneType", "repetition_rate-none"),
]


@pytest.mark.parametrize(("call", "error", "match"), VECTOR_CASES + NEURON_CASES + METRIC_CASES)
def test_bad_input_raises_a_clear_error(unchecked_shapes, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_nlr_zero_gain_uses_the_documented_eps_floor():
    """Zero target gain: NLR is mean off-target leakage / eps (finite, explicit), never inf or an exception."""
    d = np.zeros((1, 10))
    d[0, VALUES.index("security")] = 0.09
    with np.errstate(all="raise"):
        out = nlr(d, ["power"], eps=0.01)
    assert np.isfinite(out).all() and out[0] == pytest.approx(0.09 / 9 / 0.01)


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # np.nanmean of an all-NaN resample
def test_missing_scores_propagate_as_nan_consistently():
    """NaN marks a missing score (an unparseable judgment): the estimate AND its bounds are NaN (before, the
    bounds stayed finite around a NaN estimate); NLR is NaN only for the target whose row has the gap."""
    assert all(np.isnan(v) for v in bootstrap_ci([1.0, NAN, 3.0, 4.0]))
    assert all(np.isnan(v) for v in paired_difference([1.0, 2.0, 3.0], [1.0, NAN, 2.0]))
    est, lo, hi = bootstrap_ci([1.0, NAN, 3.0, 4.0], np.nanmean)  # a NaN-aware stat skips them
    assert est == pytest.approx(8 / 3) and lo <= est <= hi
    d = np.zeros((2, 10))
    d[0, VALUES.index("power")], d[1, VALUES.index("tradition")] = 0.5, 0.5
    d[1, VALUES.index("security")] = NAN
    out = nlr(d, ["power", "tradition"])
    assert out[0] == 0.0 and np.isnan(out[1])


def test_undefined_results_are_nan_as_documented():
    assert np.isnan(distinct_n([""], 2)) and np.isnan(distinct_n([], 2))
    assert np.isnan(mean_delta(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))[1])
