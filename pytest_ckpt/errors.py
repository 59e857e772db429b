"""The exceptions pytest-ckpt raises. Each message is one line: what, where, and the fix."""

from __future__ import annotations


class CheckpointError(Exception):
    """Base class: a checkpoint failed a check pytest-ckpt makes."""


class CheckpointLoadError(CheckpointError):
    """`torch.load(weights_only=True)` refused or could not read the file."""


class RoundTripMismatch(CheckpointError):
    """What came back from a round trip differs from what went in."""


class ResumeMismatch(CheckpointError):
    """Resuming from a checkpoint did not reproduce the run that never stopped."""


class SubjectError(CheckpointError):
    """A subject does not satisfy the `Subject` protocol or broke its contract."""
