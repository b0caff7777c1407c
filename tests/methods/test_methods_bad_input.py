"""Bad settings of the methods fail at construction with a message naming the setting (table-driven)."""

from __future__ import annotations

import pytest

from mechvalue.core.errors import MechvalueError, UsageError
from mechvalue.methods.valuelocate import ValueLocateConfig

CASES = [  # (constructor, kwargs, error class, message)
    (ValueLocateConfig, {"tau": 0.0}, UsageError, r"tau must be in \(0, 1\), got 0.0"),
    (ValueLocateConfig, {"tau": 1.5}, UsageError, r"tau must be in \(0, 1\), got 1.5"),
    (ValueLocateConfig, {"tau": float("nan")}, UsageError, r"tau must be in \(0, 1\), got nan"),
    (ValueLocateConfig, {"max_questions": 0}, UsageError, "max_questions must be >= 1"),
    (ValueLocateConfig, {"batch_size": 0}, UsageError, "batch_size must be >= 1"),
    (ValueLocateConfig, {"input_mode": "essay"}, MechvalueError, "input_mode must be one of"),
]


@pytest.mark.parametrize(("make", "kwargs", "error", "message"), CASES,
                         ids=[f"{m.__name__}-{next(iter(k))}" for m, k, _, _ in CASES])
def test_bad_settings_are_clear_errors(make, kwargs, error, message):
    with pytest.raises(error, match=message):
        make(**kwargs)
