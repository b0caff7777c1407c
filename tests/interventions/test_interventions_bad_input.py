"""Non-finite or mis-shaped numbers in intervention specs are refused when the spec is built (issue #16).

Before, ``AddVector(layer, v, alpha=nan)`` and friends were accepted, turned every later activation into
NaN and produced empty text with exit status 0. Each case is ``(build, error class, regex on the message)``;
the message names the spec, the field and what it holds.
"""

from __future__ import annotations

import pytest
import torch

from mechvalue.core.errors import UsageError
from mechvalue.interventions import (
    AblateNeurons,
    AddVector,
    ProbePush,
    ProjectOut,
    ScaleNeurons,
    SetNeurons,
    sweep,
)

NAN, INF = float("nan"), float("inf")
V = torch.ones(4)
HOOK = "blocks.0.hook_resid_post"


def _with(value: float, at: int = 1, n: int = 4) -> torch.Tensor:
    t = torch.ones(n)
    t[at] = value
    return t


def case(build, match, id):
    return pytest.param(build, match, id=id)


CASES = [
    case(lambda: AddVector(1, V, NAN), r"AddVector\(layer=1\): alpha = nan; expected finite numbers", "add-alpha-nan"),
    case(lambda: AddVector(1, V, -INF), r"AddVector\(layer=1\): alpha = -inf", "add-alpha-inf"),
    case(lambda: AddVector(2, V, [1.0, NAN, 2.0]), r"AddVector\(layer=2\): alpha has 1 NaN/inf entries of 3 "
         r"\(first at index 1: nan\)", "add-per-row-alpha-list"),
    case(lambda: AddVector(2, V, torch.tensor([INF, 1.0])),
         r"alpha has 1 NaN/inf entries of 2 \(first at index 0: inf\)", "add-per-row-alpha-tensor"),
    case(lambda: AddVector(1, V, "big"), r"alpha must be a number or a tensor of numbers, got str", "add-alpha-string"),
    case(lambda: AddVector(3, _with(NAN, 2)), r"AddVector\(layer=3\): vector has 1 NaN/inf entries of 4 "
         r"\(first at index 2: nan\)", "add-vector-nan"),
    case(lambda: ScaleNeurons(0, [1, 2], NAN), r"ScaleNeurons\(layer=0\): factor = nan", "scale-factor-nan"),
    case(lambda: ScaleNeurons(0, [1, 2], torch.tensor([1.0, INF])), r"factor has 1 NaN/inf entries of 2",
         "scale-per-index-inf"),
    case(lambda: ScaleNeurons(0, [1, 2], [1.0, 2.0, 3.0]), r"factor has 3 entries, expected 1 or 2 \(one per index\)",
         "scale-per-index-length"),
    case(lambda: SetNeurons(1, [5], INF), r"SetNeurons\(layer=1\): values = inf", "set-values-inf"),
    case(lambda: SetNeurons(1, [5, 6], [0.0, NAN]), r"values has 1 NaN/inf entries of 2", "set-per-index-nan"),
    case(lambda: AblateNeurons(0, [1], "mean", means=[NAN]), r"AblateNeurons\(layer=0\): means has 1 NaN/inf",
         "ablate-means-nan"),
    case(lambda: ProjectOut(0, _with(NAN, 0)), r"ProjectOut\(layer=0\): direction has 1 NaN/inf", "project-nan"),
    case(lambda: ProjectOut(0, torch.zeros(4)), r"ProjectOut\(layer=0\): direction is all zeros", "project-zero"),
    case(lambda: ProbePush(HOOK, V, 0.0, NAN), r"ProbePush\(hook='blocks.0.hook_resid_post'\): target = nan",
         "probe-push-target-nan"),
    case(lambda: ProbePush(HOOK, V, INF), r"ProbePush\(hook='blocks.0.hook_resid_post'\): b = inf", "probe-push-b-inf"),
    case(lambda: ProbePush(HOOK, _with(INF, 3)), r"w has 1 NaN/inf entries of 4", "probe-push-w-inf"),
    case(lambda: ProbePush(HOOK, torch.zeros(4)), r"w is all zeros", "probe-push-w-zero"),
    case(lambda: ProbePush(HOOK, V, mean=_with(NAN, 0)), r"mean has 1 NaN/inf", "probe-push-mean-nan"),
    case(lambda: ProbePush(HOOK, V, scale=torch.zeros(4)), r"scale has zeros", "probe-push-scale-zero"),
    case(lambda: sweep(AddVector(1, V), alpha=[1.0, NAN]), r"AddVector\(layer=1\): alpha = nan", "sweep-alpha-nan"),
]


@pytest.mark.parametrize(("build", "match"), CASES)
def test_bad_spec_numbers_are_refused_at_construction(unchecked_shapes, build, match):
    with pytest.raises(UsageError, match=match):
        build()


def test_replace_checks_again():
    spec = AddVector(1, V, 2.0)
    with pytest.raises(UsageError, match="alpha = inf"):
        spec.replace(alpha=INF)
    assert spec.replace(alpha=torch.tensor([1.0, -3.0])).alpha.shape == (2,)  # finite per-row alphas are fine
