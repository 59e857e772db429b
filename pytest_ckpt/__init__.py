"""pytest-ckpt: prove PyTorch checkpoints survive save -> load(weights_only=True) -> resume.

Importing this package does not import torch; the plugin imports it only when
`--ckpt-roundtrip` is on or a ckpt fixture is used.
"""

from pytest_ckpt.adapters.module import ModuleSubject
from pytest_ckpt.errors import (
    CheckpointError,
    CheckpointLoadError,
    ResumeMismatch,
    RoundTripMismatch,
    SubjectError,
)
from pytest_ckpt.subject import StepResult, Subject

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CheckpointLoadError",
    "ModuleSubject",
    "ResumeMismatch",
    "RoundTripMismatch",
    "StepResult",
    "Subject",
    "SubjectError",
    "__version__",
]
