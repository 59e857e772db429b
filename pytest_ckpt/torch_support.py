"""Which torch versions pytest-ckpt can vouch for.

torch >= 2.6 is required (the first release whose `torch.load` defaults to weights_only=True
and closes CVE-2025-32434). Below 2.10 the weights_only unpickler could still be bypassed
(CVE-2026-24747, SETITEM onto a non-dict), so a "loads with weights_only=True" verdict is
weaker there and we say so. The auditor mirrors torch's private weights_only unpickler, so
each torch minor version it vouches for was reviewed against it: its allowlist, with what
each allowed callable returns, lies in `audit/torch_allowlists/MAJOR.MINOR.txt`. On a torch
with no such file (a newer one, above all) the audit's verdicts are unproven, and we say so.
"""

from __future__ import annotations

import functools
import re
import warnings
from pathlib import Path

MINIMUM_TORCH = (2, 6)
HARDENED_TORCH = (2, 10)
REVIEWED_ALLOWLISTS = Path(__file__).parent / "audit" / "torch_allowlists"
# Advisories already given in this process: each is said once, however many audits run.
_ANNOUNCED: set[str] = set()


class TorchVersionWarning(UserWarning):
    """The installed torch has a weights_only unpickler with a known bypass, or one the
    auditor was not reviewed against."""


def parse_torch_version(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version string such as '2.13.0+cpu' or '2.10.0a0+git1234'."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"cannot read a torch version from {version!r}")
    return int(match.group(1)), int(match.group(2))


def reviewed_torch_versions() -> list[tuple[int, int]]:
    """The (major, minor) torch versions whose weights_only rules the auditor was reviewed
    against, oldest first (one data file each)."""
    return list(_reviewed_in(REVIEWED_ALLOWLISTS))


@functools.cache
def _reviewed_in(folder: Path) -> tuple[tuple[int, int], ...]:
    """The package's own data folder: listed once per process (every audit asks)."""
    return tuple(sorted(parse_torch_version(p.stem) for p in folder.glob("*.txt")))


def shown(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def weights_only_advisory(version: str) -> str | None:
    """A one-line warning for torch versions whose weights_only loader had a known bypass."""
    if parse_torch_version(version) >= HARDENED_TORCH:
        return None
    return (
        f"torch {version} is older than 2.10: its weights_only=True loader had a known bypass "
        f"(CVE-2026-24747), so a passing round trip does not prove a file is safe to load; "
        f"upgrade to torch>=2.10"
    )


def unreviewed_advisory(version: str) -> str | None:
    """A one-line warning for a torch (2.10 or later) whose weights_only rules the auditor
    was not reviewed against: the audit mirrors them, so its verdicts are unproven there."""
    parsed = parse_torch_version(version)
    reviewed = reviewed_torch_versions()
    if parsed < HARDENED_TORCH or parsed in reviewed:
        return None
    newest = reviewed[-1]
    listed = ", ".join(shown(v) for v in reviewed)
    if parsed > newest:
        return (
            f"torch {version} is newer than the last torch pytest-ckpt was reviewed against "
            f"({shown(newest)}): its weights_only rules may have changed, so audit verdicts "
            f"are unproven; upgrade pytest-ckpt or use torch<={shown(newest)}"
        )
    return (
        f"torch {version} is not among the torch versions pytest-ckpt was reviewed against "
        f"({listed}): audit verdicts are unproven there; use one of those versions"
    )


def torch_advisories(version: str) -> list[str]:
    """Everything a user should know about running on this torch, one line each."""
    return list(_advisories(str(version)))


@functools.cache
def _advisories(version: str) -> tuple[str, ...]:
    """`torch_advisories`, once per version (every audit asks, for the installed torch)."""
    found = (weights_only_advisory(version), unreviewed_advisory(version))
    return tuple(advisory for advisory in found if advisory is not None)


def new_advisories(version: str | None = None) -> list[str]:
    """The advisories for `version` (default: the installed torch) not yet given in this
    process; they count as given once returned."""
    if version is None:
        import torch

        version = torch.__version__
    fresh = [a for a in torch_advisories(version) if a not in _ANNOUNCED]
    _ANNOUNCED.update(fresh)
    return fresh


def warn_about_torch(version: str | None = None) -> None:
    """Warn (TorchVersionWarning) once per process for each advisory about this torch."""
    for advisory in new_advisories(version):
        warnings.warn(advisory, TorchVersionWarning, stacklevel=3)


def check_torch(version: str | None = None) -> None:
    """Raise for torch < 2.6; warn (TorchVersionWarning) for torch < 2.10 and for a torch
    the auditor was not reviewed against."""
    if version is None:
        import torch

        version = torch.__version__
    if parse_torch_version(version) < MINIMUM_TORCH:
        raise RuntimeError(
            f"pytest-ckpt needs torch>=2.6 (found {version}): older torch.load does not default "
            f"to weights_only=True and is open to CVE-2025-32434"
        )
    warn_about_torch(version)
