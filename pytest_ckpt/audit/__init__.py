"""Checkpoint auditor: will `torch.load(weights_only=True)` accept this file, and if not,
which object, where, and how to fix it. It never imports anything the file names, never
calls anything off torch's own allowlist, and never reads tensor bytes.

The verdict has two stages. The static machine (`verdict`) runs first: it builds nothing,
proves which globals are referenced, and gives every finding its path and fix. Where it
finds nothing torch refuses by name but the pickle holds more than plain tensors and
containers (calls, states, sets...), torch's own weights_only unpickler runs over it with
storages that hold no bytes (`oracle`, whose docstring says why that is safe), so arity,
argument types, BUILD states, SETITEMS, keys, view bounds and storage locations are judged
by torch itself. Limits: a pickle, after inflating, of at most 256 MiB (`legacy`); a call
that would allocate what the file chooses, or read tensor bytes, is not vouched for.

    from pytest_ckpt.audit import audit_file
    report = audit_file("model.pt")
    report.loadable, [f.path for f in report.findings]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pytest_ckpt.audit.allowlist import Allowlist, load_allowlist
from pytest_ckpt.audit.exact_allowlist import exact_safe_globals
from pytest_ckpt.audit.formats.torch_archive import (
    BinaryStream,
    Checkpoint,
    Unreadable,
    is_stream,
    open_checkpoint,
)
from pytest_ckpt.audit.machine import gc_paused
from pytest_ckpt.audit.nodes import Finding
from pytest_ckpt.audit.opcodes import MalformedPickle, TruncatedPickle
from pytest_ckpt.audit.oracle import (
    FileTruncated,
    NeedsTensorData,
    ResourceLimit,
    TorchRefusal,
    Unverifiable,
    legacy_refusal,
    zip_refusal,
)
from pytest_ckpt.audit.verdict import PickleInterpreter

__all__ = ["Finding", "Report", "audit_file"]


@dataclass(slots=True, frozen=True)
class Report:
    """The audit of one file (or one DCP folder: `audit.formats.dcp`). `error` is set
    when it could not be read at all. `summary`, when set, says what an "ok" verdict vouches
    for, where that is not "loads with weights_only=True" (a DCP folder)."""

    path: str
    format: str | None
    findings: tuple[Finding, ...]
    error: str | None = None
    storages: int = 0
    notes: tuple[str, ...] = ()
    summary: str = ""
    findings_omitted: int = 0  # past the cap (nodes.MAX_FINDINGS per pickle)
    # How to find the exact allowlist of a file with findings (`exact_allowlist`): asked
    # for on first use of `safe_globals`, since it costs one more static pass per round.
    exact: Callable[[], list[str] | None] | None = field(default=None, repr=False, compare=False)
    # a one-item cache of that answer (a frozen dataclass: the list is the mutable cell)
    _exact_result: list[list[str] | None] = field(default_factory=list, repr=False, compare=False)

    @property
    def safe_globals(self) -> list[str] | None:
        """The names torch.serialization.safe_globals needs to load the file ([] when it
        loads as is), or None when no allowlist can: exact, found by auditing the file again
        with the names allowed. Each finding's `allowlist_helps` is its own object's answer."""
        if self.error is not None:
            return None
        if not self.findings:
            return []
        if not self._exact_result:
            names = self.exact() if self.exact is not None else None
            self._exact_result.append(names)
            object.__setattr__(self, "exact", None)  # the file's pickle is no longer held
        return self._exact_result[0]

    @property
    def readable(self) -> bool:
        return self.error is None

    @property
    def loadable(self) -> bool:
        return self.error is None and not self.findings


def audit_file(
    path: str | os.PathLike[str] | BinaryStream,
    *,
    allow: Iterable[str] = (),
    allowlist: Allowlist | None = None,
    map_location: str | None = None,
) -> Report:
    """Audit one file against the allowlist of the installed torch (plus `allow` names).

    `path` may be a seekable binary stream (reported under its `name`): a DCP byte item.
    The verdict is for `torch.load(path, weights_only=True, map_location=map_location)` on
    this host: with None, a storage saved on a device this host lacks ("cuda:0" on a CPU-only
    host) is refused, as torch refuses it."""
    allowlist = allowlist or load_allowlist(allow)
    with gc_paused():
        return _audit(path, allowlist, map_location)


def _audit(
    path: str | os.PathLike[str] | BinaryStream, allowlist: Allowlist, map_location: str | None
) -> Report:
    name = str(getattr(path, "name", "<stream>")) if is_stream(path) else os.fspath(path)
    try:
        checkpoint = open_checkpoint(path)
    except Unreadable as err:
        return Report(name, None, (), error=str(err))
    if checkpoint.format in _REFUSED_FORMATS:
        return Report(name, checkpoint.format, (_REFUSED_FORMATS[checkpoint.format],))
    try:
        findings, interpreter = _scan(checkpoint, allowlist, map_location)
    except TruncatedPickle as err:
        return Report(name, checkpoint.format, (), error=f"truncated: {err}")
    except MalformedPickle as err:
        return Report(name, checkpoint.format, (), error=f"corrupt pickle: {err}")
    notes = list(checkpoint.notes)
    omitted = interpreter.findings_omitted
    exact = None
    if findings and not interpreter.keys_omitted:  # repeats past the cap ask for nothing new

        def exact() -> list[str] | None:
            return _exact(checkpoint, allowlist, findings, map_location)

    elif not findings:
        try:
            refusal = _torch_refusal(checkpoint, interpreter, map_location, notes)
        except FileTruncated as err:
            return Report(name, checkpoint.format, (), error=f"truncated: {err}")
        if refusal is not None:
            findings.append(refusal)  # torch's own refusal: no allowlist (exact stays None)
    return Report(
        name,
        checkpoint.format,
        tuple(findings),
        storages=interpreter.storages,
        notes=tuple(notes),
        findings_omitted=omitted,
        exact=exact,
    )


def _scan(
    checkpoint: Checkpoint, allowlist: Allowlist, map_location: str | None
) -> tuple[list[Finding], PickleInterpreter]:
    """Every static finding of one readable checkpoint (raises TruncatedPickle,
    MalformedPickle): its data pickle, and for a legacy file the other four pickles."""
    interpreter = PickleInterpreter(
        checkpoint.pickle,
        allowlist,
        start=checkpoint.pickle_start,
        storage_sizes=checkpoint.storage_sizes if checkpoint.format == "zip" else None,
        map_location=map_location,
    )
    _root, findings = interpreter.run()
    if checkpoint.format == "legacy":
        findings += _legacy_pickles_problems(checkpoint, interpreter.end, allowlist)
    if checkpoint.format == "raw-pickle":
        findings.insert(0, _RAW_PICKLE)
    return findings, interpreter


def _exact(
    checkpoint: Checkpoint, allowlist: Allowlist, findings: list[Finding], map_location: str | None
) -> list[str] | None:
    """The names that make the static pass clean (`exact_allowlist`), or None."""

    def scan(extended: Allowlist) -> list[Finding] | None:
        try:
            again, interpreter = _scan(checkpoint, extended, map_location)
        except (TruncatedPickle, MalformedPickle):
            return None
        return None if interpreter.keys_omitted else again

    return exact_safe_globals(findings, allowlist, scan)


def _torch_refusal(
    checkpoint: Checkpoint,
    interpreter: PickleInterpreter,
    map_location: str | None,
    notes: list[str],
) -> Finding | None:
    """Stage two, after a clean static pass: torch's own unpickler where the static pass
    does not cover every check torch makes (`stage2_gate.OracleGate`, `oracle`)."""
    legacy = checkpoint.format == "legacy"
    if not (legacy or interpreter.gate.needs_oracle()):
        return None
    problem = interpreter.gate.resource_problem()
    if problem is not None:
        return Finding(
            "resource-limit",
            f"not vouched for: {problem}",
            None,
            "store tensors with torch.save, not sizes for a constructor to allocate",
            False,
            0,
            "root",
        )
    reason = interpreter.gate.oracle_refused_reason()
    if reason is not None:
        notes.append(
            f"not cross-checked with torch's unpickler ({reason}): argument, state and "
            "storage checks torch makes while loading are not covered by this verdict"
        )
        return None
    try:
        if legacy:
            assert checkpoint.read_at is not None
            unverified = legacy_refusal(
                checkpoint.pickle, checkpoint.read_at, checkpoint.size, map_location
            )
        else:
            unverified = zip_refusal(checkpoint.pickle, checkpoint.storage_sizes, map_location)
    except Unverifiable as err:  # a check that did not run to the end never says ok
        return _cannot_verify(str(err))
    except ResourceLimit as err:
        return Finding(
            "resource-limit",
            f"not vouched for: {err}",
            None,
            "store tensors with torch.save, not sizes for a constructor to allocate",
            False,
            0,
            "root",
        )
    except NeedsTensorData as err:
        return Finding(
            "resource-limit",
            f"not vouched for: torch's unpickler would read tensor bytes here ({err}), and "
            "the auditor never reads them",
            None,
            "store tensors and plain containers; do not pass storages to allow-listed calls",
            False,
            0,
            "root",
        )
    except TorchRefusal as refusal:
        return Finding(
            "torch-refuses",
            f"torch's weights_only unpickler refuses it: {refusal}",
            None,
            "re-save the checkpoint with torch.save from tensors and plain containers",
            False,
            0,
            "root",
        )
    if unverified:  # torch checks these on tensor bytes the auditor does not read
        return _cannot_verify(
            unverified[0] + (f" (and {len(unverified) - 1} more)" if len(unverified) > 1 else "")
        )
    return None


def _cannot_verify(reason: str) -> Finding:
    """The finding of a stage 2 that could not judge everything: never ok (exit 1)."""
    return Finding(
        "cannot-verify",
        f"cannot verify: {reason}",
        None,
        "audit the file where it can be loaded for real, or save plain (not nested) tensors",
        False,
        0,
        "root",
    )


def _legacy_pickles_problems(
    checkpoint: Checkpoint, data_end: int, allowlist: Allowlist
) -> list[Finding]:
    """torch runs every pickle of the legacy format through the weights_only unpickler:
    the magic number, protocol version and sys_info before the object, the storage keys
    after it. Each gets the same static checks (a payload in sys_info is refused too)."""
    starts = checkpoint.pickle_starts
    problems = []
    for start, what in ((starts[0], "magic number"), (starts[1], "protocol version"),
                        (starts[2], "sys_info"), (data_end, "storage keys")):  # fmt: skip
        _value, findings = PickleInterpreter(checkpoint.pickle, allowlist, start=start).run()
        for finding in findings:
            finding.path = f"<legacy {what} pickle>"
            problems.append(finding)
    return problems


_RAW_PICKLE = Finding(
    "format",
    "a raw pickle, not a torch checkpoint: torch.load fails with 'Invalid magic number'",
    None,
    "write checkpoints with torch.save",
    False,
    0,
    "root",
)
_REFUSED_FORMATS = {
    "torchscript": Finding(
        "torchscript",
        "a TorchScript archive: torch.load(weights_only=True) refuses these",
        None,
        "load it with torch.jit.load (only if you trust it), or save a state_dict",
        False,
        0,
        "root",
    ),
    "legacy-tar": Finding(
        "legacy-tar",
        "a legacy .tar checkpoint: torch.load(weights_only=True) refuses these",
        None,
        "load it with weights_only=False only if you trust it, then re-save it with torch.save",
        False,
        0,
        "root",
    ),
}
