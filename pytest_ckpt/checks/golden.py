"""Back-compatibility over a directory of committed checkpoints (the project's own golden
files): each must still load with `torch.load(weights_only=True)`, match the sha256 its
`manifest.json` records (when there is one), and rebuild with the caller's code."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pytest_ckpt.checks.loading import load_file
from pytest_ckpt.errors import CheckpointError


def load_fixture_dir(
    directory: str | os.PathLike[str],
    *,
    rebuild: Callable[[Any], Any] | None = None,
    pattern: str | Sequence[str] = "*.pt",
) -> dict[str, Any]:
    """Load every file under `directory` (recursively) matching `pattern`, a glob or a sequence
    of globs (`"*.ckpt"`, `("*.pt", "*.pth")`, `"lightning/*.ckpt"`); returns {relative name:
    loaded state}.

    Raises CheckpointError naming the file and the reason for the first file that is missing
    from or differs from the manifest, does not load with weights_only=True (with the auditor's
    paths and fixes), or whose `rebuild` raises.
    """
    root = Path(directory)
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"pattern must be a glob or a sequence of globs, got {pattern!r}")
    files = sorted({path for p in patterns for path in root.rglob(p) if path.is_file()})
    if not files:
        raise CheckpointError(f"{root}: no files matching {' or '.join(patterns)} to check")
    recorded = _manifest_hashes(root)
    loaded = {}
    for path in files:
        name = path.relative_to(root).as_posix()
        expected = recorded.get(name)
        if expected is not None and hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            raise CheckpointError(f"{path}: sha256 differs from {root}/manifest.json")
        state = load_file(path)
        if rebuild is not None:
            try:
                rebuild(state)
            except Exception as err:  # reported with the file, not swallowed
                raise CheckpointError(
                    f"{path}: rebuild failed: {type(err).__name__}: {err}"
                ) from err
        loaded[name] = state
    return loaded


def _manifest_hashes(root: Path) -> dict[str, str]:
    manifest = root / "manifest.json"
    if not manifest.exists():
        return {}
    try:
        data = json.loads(manifest.read_text())
        return {entry["file"]: entry["sha256"] for entry in data["files"]}
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{manifest}: unreadable manifest: {err}") from None
