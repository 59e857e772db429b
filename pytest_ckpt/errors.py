"""The exceptions pytest-ckpt raises. Each message is one line: what, where, and the fix."""

from __future__ import annotations

from collections.abc import Sequence


class CheckpointError(Exception):
    """Base class: a checkpoint failed a check pytest-ckpt makes.

    A message that ends in a list (one line per refused object, per difference) keeps the
    list's lines in `items`: `str(err)` holds all of them, and a terminal may show the first
    few with a count of the rest (`plugin.report.shortened`), since nothing may be lost.
    """

    def __init__(
        self, message: str = "", *, items: Sequence[str] = (), full: str | None = None
    ) -> None:
        """`full`: the whole message where `message` was already cut for a terminal (the
        `--ckpt-report` report shows it)."""
        self.head = message
        self.items = tuple(items)
        super().__init__("\n".join([message, *(f"  {item}" for item in self.items)]))
        self.full = str(self) if full is None else full


class CheckpointLoadError(CheckpointError):
    """`torch.load(weights_only=True)` refused or could not read the file."""


class CheckpointIntegrityError(CheckpointError):
    """A checkpoint's bytes do not match its sidecar (or the sidecar is unreadable)."""


class RoundTripMismatch(CheckpointError):
    """What came back from a round trip differs from what went in."""


class ResumeMismatch(CheckpointError):
    """Resuming from a checkpoint did not reproduce the run that never stopped."""


class SubjectError(CheckpointError):
    """A subject does not satisfy the `Subject` protocol or broke its contract."""


class UnsafeCheckpointError(CheckpointLoadError):
    """A checkpoint would run code or build objects outside the allowlist if loaded: refused
    before anything from it ran (`pytest_ckpt.distributed.SafeFileSystemReader`)."""


class DistributedRunError(CheckpointError):
    """A rank of a distributed check failed, died or timed out; the message names the rank."""


class WorldSizeResumeMismatch(ResumeMismatch):
    """Resuming at LOAD ranks from a save at SAVE ranks differs from the run that continued:
    the message names the rank, the key and the first difference."""


# Reading files: raised by the auditor and static migrate, never caught as CheckpointError.


class Unreadable(Exception):
    """The file cannot be read as a checkpoint at all (exit status 2)."""


class TruncatedPickle(ValueError):
    """The pickle ends (or declares more data than it has) before STOP."""


class MalformedPickle(ValueError):
    """An opcode or argument that no pickle protocol defines."""


class ConversionRefused(Exception):
    """Some objects cannot be converted faithfully; `refusals` lists them by path."""

    def __init__(self, refusals: list[str]) -> None:
        super().__init__("; ".join(refusals))
        self.refusals = refusals
