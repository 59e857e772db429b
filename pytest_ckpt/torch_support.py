"""Which torch versions pytest-ckpt can vouch for.

torch >= 2.6 is required (the first release whose `torch.load` defaults to weights_only=True
and closes CVE-2025-32434). Below 2.10 the weights_only unpickler could still be bypassed
(CVE-2026-24747, SETITEM onto a non-dict), so a "loads with weights_only=True" verdict is
weaker there and we say so.
"""

from __future__ import annotations

import re
import warnings

MINIMUM_TORCH = (2, 6)
HARDENED_TORCH = (2, 10)


class TorchVersionWarning(UserWarning):
    """The installed torch has a weights_only unpickler with a known bypass."""


def parse_torch_version(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version string such as '2.13.0+cpu' or '2.10.0a0+git1234'."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"cannot read a torch version from {version!r}")
    return int(match.group(1)), int(match.group(2))


def weights_only_advisory(version: str) -> str | None:
    """A one-line warning for torch versions whose weights_only loader had a known bypass."""
    if parse_torch_version(version) >= HARDENED_TORCH:
        return None
    return (
        f"torch {version} is older than 2.10: its weights_only=True loader had a known bypass "
        f"(CVE-2026-24747), so a passing round trip does not prove a file is safe to load; "
        f"upgrade to torch>=2.10"
    )


def check_torch(version: str | None = None) -> None:
    """Raise for torch < 2.6; warn (TorchVersionWarning) for torch < 2.10."""
    if version is None:
        import torch

        version = torch.__version__
    if parse_torch_version(version) < MINIMUM_TORCH:
        raise RuntimeError(
            f"pytest-ckpt needs torch>=2.6 (found {version}): older torch.load does not default "
            f"to weights_only=True and is open to CVE-2025-32434"
        )
    advisory = weights_only_advisory(version)
    if advisory is not None:
        warnings.warn(advisory, TorchVersionWarning, stacklevel=2)
