"""Static checkpoint auditor: will `torch.load(weights_only=True)` accept this file, and if not,
which object, where, and how to fix it. It never imports, calls or constructs anything from
the file, and never reads tensor bytes.

    from pytest_ckpt.audit import audit_file
    report = audit_file("model.pt")
    report.loadable, [f.path for f in report.findings]
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO

from pytest_ckpt.audit.allowlist import Allowlist, load_allowlist
from pytest_ckpt.audit.archive import Checkpoint, Unreadable, open_checkpoint
from pytest_ckpt.audit.exact_allowlist import exact_safe_globals
from pytest_ckpt.audit.machine import gc_paused
from pytest_ckpt.audit.nodes import Finding
from pytest_ckpt.audit.opcodes import MalformedPickle, TruncatedPickle
from pytest_ckpt.audit.verdict import PickleInterpreter

__all__ = ["Finding", "Report", "audit_file"]


@dataclass(slots=True, frozen=True)
class Report:
    """The audit of one file (or one DCP folder: `pytest_ckpt.distributed`). `error` is set
    when it could not be read at all. `summary`, when set, says what an "ok" verdict vouches
    for, where that is not "loads with weights_only=True" (a DCP folder)."""

    path: str
    format: str | None
    findings: tuple[Finding, ...]
    error: str | None = None
    storages: int = 0
    notes: tuple[str, ...] = ()
    summary: str = ""
    # The names torch.serialization.safe_globals needs to load it ([] when it loads as is),
    # None when no allowlist can (exact_allowlist); findings_omitted: past the cap.
    safe_globals: list[str] | None = None
    findings_omitted: int = 0

    @property
    def readable(self) -> bool:
        return self.error is None

    @property
    def loadable(self) -> bool:
        return self.error is None and not self.findings


def audit_file(
    path: str | os.PathLike[str] | IO[bytes],
    *,
    allow: Iterable[str] = (),
    allowlist: Allowlist | None = None,
) -> Report:
    """Audit one file against the allowlist of the installed torch (plus `allow` names).

    `path` may be a seekable binary stream (reported under its `name`): a DCP byte item."""
    allowlist = allowlist or load_allowlist(allow)
    with gc_paused():
        return _audit(path, allowlist)


def _audit(path: str | os.PathLike[str] | IO[bytes], allowlist: Allowlist) -> Report:
    name = str(getattr(path, "name", "<stream>")) if hasattr(path, "read") else os.fspath(path)
    try:
        checkpoint = open_checkpoint(path)
    except Unreadable as err:
        return Report(name, None, (), error=str(err))
    if checkpoint.format == "torchscript":
        finding = Finding(
            "torchscript",
            "a TorchScript archive: torch.load(weights_only=True) refuses these",
            None,
            "load it with torch.jit.load (only if you trust it), or save a state_dict",
            False,
            0,
            "root",
        )
        return Report(name, "torchscript", (finding,))
    try:
        findings, interpreter = _scan(checkpoint, allowlist)
    except TruncatedPickle as err:
        return Report(name, checkpoint.format, (), error=f"truncated: {err}")
    except MalformedPickle as err:
        return Report(name, checkpoint.format, (), error=f"corrupt pickle: {err}")
    omitted = interpreter.findings_omitted
    safe_globals: list[str] | None = []
    if findings:
        safe_globals = None if omitted else _exact(checkpoint, allowlist, findings)
        for finding in findings:  # "would be enough" is only ever said of the whole file
            finding.allowlist_helps = safe_globals is not None
    return Report(
        name,
        checkpoint.format,
        tuple(findings),
        storages=interpreter.storages,
        notes=tuple(checkpoint.notes),
        safe_globals=safe_globals,
        findings_omitted=omitted,
    )


def _scan(checkpoint: Checkpoint, allowlist: Allowlist) -> tuple[list[Finding], PickleInterpreter]:
    """Every finding of one readable checkpoint (raises TruncatedPickle, MalformedPickle)."""
    interpreter = PickleInterpreter(
        checkpoint.pickle,
        allowlist,
        start=checkpoint.pickle_start,
        storage_sizes=checkpoint.storage_sizes if checkpoint.format == "zip" else None,
    )
    _root, findings = interpreter.run()
    if checkpoint.format == "raw-pickle":
        findings.insert(
            0,
            Finding(
                "format",
                "a raw pickle, not a torch checkpoint: torch.load fails with "
                "'Invalid magic number'",
                None,
                "write checkpoints with torch.save",
                False,
                0,
                "root",
            ),
        )
    if checkpoint.format == "legacy" and interpreter.end < len(checkpoint.pickle):
        trailer = _storage_keys_problem(checkpoint, interpreter.end, allowlist)
        if trailer is not None:
            findings.append(trailer)
    return findings, interpreter


def _exact(checkpoint: Checkpoint, allowlist: Allowlist, findings: list[Finding]):
    def scan(extended: Allowlist) -> list[Finding] | None:
        try:
            again, interpreter = _scan(checkpoint, extended)
        except (TruncatedPickle, MalformedPickle):
            return None
        return None if interpreter.findings_omitted else again

    return exact_safe_globals(findings, allowlist, scan)


def _storage_keys_problem(checkpoint: Checkpoint, start: int, allowlist: Allowlist):
    """The legacy format's storage-key pickle must itself pass the same checks."""
    try:
        _keys, findings = PickleInterpreter(checkpoint.pickle, allowlist, start=start).run()
    except (TruncatedPickle, MalformedPickle) as err:
        return Finding(
            "corrupt",
            f"storage keys after the object pickle: {err}",
            None,
            "re-save the checkpoint",
            False,
            start,
            "<storage keys>",
        )
    return findings[0] if findings else None
