"""Schema versions of the reference checkpoint format, and the chain that upgrades them.

Each upgrade is a small pure function from version N's dict to version N+1's. `upgrade`
applies them in order; a version newer than this code knows is an error that says so.
Version 0 (the pre-fix format with enums, datetimes, deques and modules inside extra_state)
cannot be loaded with weights_only=True at all: `pytest-ckpt migrate` converts such a file to
primitives statically, and `pytest_ckpt.reference.schema_v0.adapt_v0` turns that result into
a version-1 checkpoint (it knows the reference system's classes; this module does not).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

CURRENT_SCHEMA_VERSION = 1
OLDEST_LOADABLE_VERSION = 1

# version N -> function turning a version-N checkpoint into version N+1
UPGRADES: Mapping[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def schema_version_of(checkpoint: Any) -> int:
    if not isinstance(checkpoint, Mapping) or "schema_version" not in checkpoint:
        raise ValueError("checkpoint has no schema_version: not a pytest-ckpt reference checkpoint")
    version = checkpoint["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"checkpoint schema_version must be an int, got {version!r}")
    return version


def upgrade(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """Bring a loaded checkpoint to CURRENT_SCHEMA_VERSION through the upgrade chain."""
    version = schema_version_of(checkpoint)
    if version > CURRENT_SCHEMA_VERSION:
        raise ValueError(
            f"checkpoint schema_version {version} is newer than this pytest-ckpt knows "
            f"({CURRENT_SCHEMA_VERSION}): upgrade pytest-ckpt to read it"
        )
    if version < OLDEST_LOADABLE_VERSION:
        raise ValueError(
            f"checkpoint schema_version {version} predates the weights_only-safe format: "
            f"it must be migrated, not upgraded"
        )
    result = dict(checkpoint)
    while version < CURRENT_SCHEMA_VERSION:
        result = UPGRADES[version](result)
        version += 1
        if schema_version_of(result) != version:
            raise AssertionError(f"upgrade from {version - 1} did not produce version {version}")
    return result
