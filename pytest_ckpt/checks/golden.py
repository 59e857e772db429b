"""Back-compatibility over a directory of committed checkpoints (the project's own golden
files): each must still load with `torch.load(weights_only=True)`, match the sha256 its
`manifest.json` records (when there is one), and rebuild with the caller's code. A file whose
sha256 no longer matches is diffed against its committed version (git HEAD), statically
(`pytest_ckpt.diff`), so the failure says what changed, not only that something did."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
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
            raise CheckpointError(
                f"{path}: sha256 differs from {root}/manifest.json{what_changed(path)}"
            )
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


def what_changed(path: Path, *, shown: int = 5) -> str:
    """ "; since git HEAD: ..." (the first `shown` differences from the committed version of
    `path`), or "" when git has no committed version. Nothing from either file runs: both are
    audited and read statically by `diff_checkpoints`."""
    from pytest_ckpt.diff import diff_checkpoints

    try:
        committed = subprocess.run(
            ["git", "show", f"HEAD:./{path.name}"],
            cwd=path.parent,
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):  # no git, not a repository, not committed
        return ""
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / path.name
        before.write_bytes(committed)
        try:
            result = diff_checkpoints(str(before), str(path))
        except CheckpointError as err:
            return f"; not diffed against git HEAD: {str(err).replace(str(before), 'HEAD')}"
    items = [f"- {key}" for key in result.removed] + [f"+ {key}" for key in result.added]
    for change in result.changed:
        if change.kind == "values":
            detail = f"{change.beyond}/{change.elements} elements, max abs {change.max_abs:.3g}"
        else:
            detail = f"{change.kind} {change.before} -> {change.after}"
        items.append(f"~ {change.key}: {detail}")
    if not items:
        return "; since git HEAD: bytes differ, keys and values equal"
    more = f" (and {len(items) - shown} more)" if len(items) > shown else ""
    return f"; since git HEAD: {'; '.join(items[:shown])}{more}"
