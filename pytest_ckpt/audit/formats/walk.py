"""`pytest-ckpt audit PATH` for whatever a framework wrote at PATH: one file of any known
kind, or a folder walked for every checkpoint-like file, each with its own verdict.

A path goes to the audit of its format, as the formats table says (`formats.table`: the
one place the choice is made; this module imports no format's audit). A folder is walked
without following a symlink out of it or into a sub-folder, without opening anything but
regular files (a FIFO would block), to a bounded depth and count (past either, the walk
reports an unreadable entry: what it did not look at, it does not vouch for). A DCP folder
inside it is audited whole.
Folders whose files say which framework wrote them are named on each of their files:
"HF Trainer checkpoint" (`checkpoint-N/` of `transformers.Trainer`), "accelerate
save_state", "DCP folder"; and a `.ckpt` file is a "Lightning checkpoint". Files that are
not checkpoint-like (a README, a tokenizer) are listed as skipped, never read as pickles, and
so is a `.bin` that nothing reads as a checkpoint (a raw `numpy.tofile` array:
`bin_files`), given on the command line or met in a walk.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path

from pytest_ckpt.audit import Report
from pytest_ckpt.audit.allowlist import Allowlist
from pytest_ckpt.audit.formats import SKIPPED, Format
from pytest_ckpt.audit.formats.framework_loaders import (
    ACCELERATE,
    HF_TRAINER,
    TIMM,
    TIMM_FILES,
    FrameworkVerdict,
    judge,
    reader_for,
)
from pytest_ckpt.audit.formats.table import DCP_FOLDER, choose, probe_file, probe_folder
from pytest_ckpt.errors import Unreadable

MAX_DEPTH = 32
MAX_ENTRIES = 100_000  # directory entries looked at in one walk
LIGHTNING = "Lightning checkpoint"
DCP = DCP_FOLDER.name  # "DCP folder": a folder format's name is its layout's
_HF_DIR = re.compile(r"checkpoint-\d+")
_HF_FILES = re.compile(r"training_args\.bin|optimizer\.pt|scheduler\.pt|rng_state(_\d+)?\.pth")
_ACCELERATE_FILES = re.compile(r"random_states_\d+\.pkl")


@dataclass(slots=True)
class TargetAudit:
    """What one PATH argument came to: a report per file (skipped ones included, with format
    "skipped"; entries the walk could not look at, as unreadable ones) and the recognised
    layouts as (folder, name); `framework`, by path, the verdict of the loader that reads
    the file on resume, where its layout or name says which (`framework_loaders`)."""

    path: str
    folder: bool
    reports: list[Report] = field(default_factory=list)
    layouts: list[tuple[str, str]] = field(default_factory=list)
    framework: dict[str, FrameworkVerdict] = field(default_factory=dict)


def audit_target(
    path: str, allowlist: Allowlist, allow: Iterable[str] = (), *, map_location: str | None = None
) -> TargetAudit:
    """The audit of one command-line PATH: a folder (walked, unless a folder format such as
    a DCP folder claims it) or one file."""
    if os.path.isdir(path):
        kind = choose(probe_folder(path, given=True))
        if kind is not None:
            report = _audit_as(kind, path, allowlist, allow, map_location)
            return TargetAudit(path, False, [report], [(path, kind.name)])  # "(dcp, ...)" names it
        return walk_folder(path, allowlist, allow, map_location=map_location)
    report = audit_one_file(path, allowlist, allow, map_location=map_location)
    if Path(path).suffix == ".ckpt":
        report = _with_note(report, LIGHTNING)
    result = TargetAudit(path, False, [report])
    _judge(result, report, _layout_of_parent(path), allowlist, map_location)
    return result


def _layout_of_parent(path: str) -> str | None:
    """The layout of a file's folder: a pre-commit hook passes files, not folders."""
    folder = os.path.dirname(path) or "."
    try:
        with os.scandir(folder) as scan:
            names = [entry.name for entry in islice(scan, MAX_ENTRIES)]
    except OSError:
        return None
    return folder_layout(Path(os.path.abspath(folder)).name, names)


def audit_one_file(
    path: str,
    allowlist: Allowlist,
    allow: Iterable[str] = (),
    *,
    map_location: str | None = None,
    given: bool = True,
) -> Report:
    """One file, by its format (see `formats.table`); never raises for a bad file. A file
    met in a walk (`given=False`) that no format claims is listed as skipped."""
    try:
        probe = probe_file(path, given=given)
    except Unreadable as err:
        return Report(path, None, (), error=str(err))
    kind = choose(probe)
    if kind is None:
        return _skipped(path, "not checkpoint-like")
    return _renamed(_audit_as(kind, path, allowlist, allow, map_location), path)


def _audit_as(
    kind: Format, path: str, allowlist: Allowlist, allow: Iterable[str], map_location: str | None
) -> Report:
    return kind.audit(path, allowlist, allow=tuple(allow), map_location=map_location)


def walk_folder(
    root: str, allowlist: Allowlist, allow: Iterable[str] = (), *, map_location: str | None = None
) -> TargetAudit:
    """Every checkpoint-like file under `root`, in name order, each audited once."""
    result = TargetAudit(root, True)
    real_root = os.path.realpath(root)
    pending: list[tuple[str, int]] = [(root, 0)]
    seen = 0
    while pending:
        folder, depth = pending.pop()
        try:
            with os.scandir(folder) as scan:  # never more than the budget left in memory
                entries = sorted(islice(scan, MAX_ENTRIES - seen + 1), key=lambda e: e.name)
        except OSError as err:
            error = f"cannot list the folder: {err.strerror or err}"
            result.reports.append(Report(folder, None, (), error=error))
            continue
        layout = folder_layout(Path(folder).name, [e.name for e in entries])
        if layout:
            result.layouts.append((folder, layout))
        subfolders = []
        for entry in entries:
            seen += 1
            if seen > MAX_ENTRIES:  # unreadable, not ok: what was not looked at is not vouched for
                error = f"over {MAX_ENTRIES} entries: the walk stopped, the rest is not audited"
                result.reports.append(Report(root, None, (), error=error))
                return result
            if entry.is_dir(follow_symlinks=False):
                kind = choose(probe_folder(entry.path, given=False))
                if kind is not None:  # a DCP folder: audited whole
                    report = _audit_as(kind, entry.path, allowlist, allow, map_location)
                    result.reports.append(_with_note(_renamed(report, entry.path), kind.name))
                    result.layouts.append((entry.path, kind.name))
                elif depth + 1 >= MAX_DEPTH:
                    error = f"deeper than {MAX_DEPTH} folders: not audited"
                    result.reports.append(Report(entry.path, None, (), error=error))
                else:
                    subfolders.append((entry.path, depth + 1))
                continue
            why = _not_followed(entry, real_root)
            if why:
                result.reports.append(_skipped(entry.path, why))
                continue
            report = audit_one_file(
                entry.path, allowlist, allow, map_location=map_location, given=False
            )
            if layout and report.format != SKIPPED:
                report = _with_note(report, f"in an {layout}")
            _judge(result, report, layout, allowlist, map_location)
            if entry.name.endswith(".ckpt") and report.format != SKIPPED:
                report = _with_note(report, LIGHTNING)
            result.reports.append(report)
        pending.extend(reversed(subfolders))
    return result


def folder_layout(name: str, files: list[str]) -> str | None:
    """The framework whose save writes a folder like this one, by its file names."""
    names = set(files)
    if "trainer_state.json" in names and (
        _HF_DIR.fullmatch(name) or any(_HF_FILES.fullmatch(f) for f in names)
    ):
        return HF_TRAINER
    if any(_ACCELERATE_FILES.fullmatch(f) for f in names):
        return ACCELERATE
    if any(TIMM_FILES.fullmatch(f) for f in names):
        return TIMM
    return None


def _judge(
    result: TargetAudit,
    report: Report,
    layout: str | None,
    allowlist: Allowlist,
    map_location: str | None,
) -> None:
    """The verdict of the framework loader that reads this file on resume, where known."""
    reader = reader_for(layout, os.path.basename(report.path))
    if reader is None or report.format == SKIPPED:
        return
    verdict = judge(report, reader, allowlist, map_location)
    if verdict is not None:
        result.framework[report.path] = verdict


def _not_followed(entry: os.DirEntry[str], real_root: str) -> str | None:
    """Why a walk entry is not opened, or None for a regular file (or a symlink to one
    inside the folder)."""
    if entry.is_symlink():
        target = os.path.realpath(entry.path)
        if os.path.commonpath([real_root, target]) != real_root:
            return "a symlink out of the folder: not followed"
        try:
            mode = os.stat(target).st_mode
        except OSError:
            return "a broken symlink"
        if not stat.S_ISREG(mode):
            return "a symlink to something other than a file: not followed"
        return None
    if not entry.is_file(follow_symlinks=False):
        return "not a regular file (a FIFO, socket or device): not opened"
    return None


def _skipped(path: str, why: str) -> Report:
    return Report(path, SKIPPED, (), summary=why)


def _renamed(report: Report, path: str) -> Report:
    return report if report.path == path else replace(report, path=path)


def _with_note(report: Report, note: str) -> Report:
    return replace(report, notes=(*report.notes, note))
