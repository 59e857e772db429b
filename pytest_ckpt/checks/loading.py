"""THE weights_only load, and the explanation of a refusal.

Every load pytest-ckpt makes of a checkpoint is `torch.load(weights_only=True)` with no
allowlist (torch decides what loads), and every refusal is explained here, by the paths of the
objects torch would not load: from the live objects when we have them (their types give the
most precise advice), else from a static audit of the file, with torch's own reason last.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from pytest_ckpt.checks.live_scan import find_unsafe_objects
from pytest_ckpt.errors import CheckpointLoadError

# What torch.load raises for a file it refuses or cannot read.
LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError)


def save_and_load(state: Any, path: str | os.PathLike[str]) -> Any:
    """`torch.save` to a real file, then `torch.load(weights_only=True)` with no allowlist."""
    import torch

    torch.save(state, path)
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except LOAD_ERRORS as err:
        head, objects = explain_refusal(state, err, path)
        raise CheckpointLoadError(head, items=objects) from err


def load_file(path: str | os.PathLike[str]) -> Any:
    """`torch.load(weights_only=True)` of a file someone else wrote, with no allowlist; a
    refusal is a CheckpointLoadError naming the file and the auditor's first finding."""
    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except LOAD_ERRORS as err:
        raise CheckpointLoadError(explain_file(path, err)) from err


def explain_refusal(
    state: Any, err: BaseException, path: str | os.PathLike[str] | None = None
) -> tuple[str, list[str]]:
    """Why torch refused: a headline and every offending object by path with its fix (all of
    them: a reader who fixes the first twelve must not meet the thirteenth on the next run).

    The live objects are scanned first (their types give the most precise advice); if that
    finds nothing (a custom __reduce__, an opcode torch refuses), the saved file is audited
    statically; torch's own reason is the last resort.
    """
    head = "torch.load(weights_only=True) refused the checkpoint"
    scan = find_unsafe_objects(state)
    found = [item.describe() for item in scan.objects]
    if not found and path is not None:
        from pytest_ckpt.audit import audit_file

        report = audit_file(path)
        found = [
            f"{path}: {f.detail}. Fix: {f.fix}"
            for f in report.findings
            for path in (f.path, *f.also_at)
        ]
    if not found:
        return f"{head}: {torch_reason(err)}", []
    if not scan.complete:
        return (
            f"{head}: the first {len(found)} paths of objects it cannot load (more remain):",
            found,
        )
    return f"{head}: {len(found)} object(s) it cannot load:", found


def searching_project(folders: Sequence[str | os.PathLike[str]]) -> AbstractContextManager[None]:
    """Within the block, the auditor also reads module sources from `folders` (the plugin's
    rootdir) when it explains a refusal: nothing is imported."""
    from pytest_ckpt.audit.global_kinds import searching

    return searching(folders)


def torch_reason(err: BaseException) -> str:
    """The useful line of torch's long weights_only message."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def explain_file(path: str | os.PathLike[str], err: BaseException) -> str:
    """Why torch refused a file we did not write: the auditor's first finding, or its reason
    for calling the file unreadable, or torch's."""
    from pytest_ckpt.audit import audit_file

    report = audit_file(path)
    if report.findings:
        first = report.findings[0]
        return (
            f"{path}: not loadable with weights_only=True: {first.path}: {first.detail}. "
            f"Fix: {first.fix}"
        )
    return f"{path}: not loadable with weights_only=True: {report.error or torch_reason(err)}"
