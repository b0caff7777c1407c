"""Exceptions raised by mechvalue.

Every error a user can cause (unknown value, bad shapes, a missing hook, a corrupt file,
an offline model that is not on disk) raises a subclass of :class:`MechvalueError` whose
message names the problem and what to change.
"""

from __future__ import annotations


class MechvalueError(ValueError):
    """Base class for all errors raised on bad input or state."""


class UsageError(MechvalueError):
    """An argument, flag or setting the caller can fix (unknown name, out-of-range or non-finite number)."""


class ModelUnavailableError(MechvalueError):
    """A model cannot be loaded (offline and not cached, or an unsupported architecture)."""


class HookError(UsageError):
    """A layer, hook name or neuron index the model does not have."""


class CorruptFileError(MechvalueError):
    """A saved artifact is unreadable, incomplete, or belongs to another model or setting."""


class DataError(MechvalueError):
    """A dataset is empty, malformed or fails schema validation."""
