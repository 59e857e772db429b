"""`pytest-ckpt audit PATH` for whatever a framework wrote at PATH: one file of any known
kind, or a folder walked for every checkpoint-like file, each with its own verdict.

A file goes to the audit of what it is: safetensors (`formats.safetensors`), an SB3
`model.save` zip (`formats.sb3_zip`), JSON (parsed, nothing in it runs), a DCP folder's member
(the DCP audit), else the torch.load auditor. A folder is walked without following a
symlink out of it or into a sub-folder, without opening anything but regular files (a FIFO
would block), to a bounded depth and count (past either, the walk reports an unreadable
entry: what it did not look at, it does not vouch for). A DCP folder inside it is audited
whole.
Folders whose files say which framework wrote them are named on each of their files:
"HF Trainer checkpoint" (`checkpoint-N/` of `transformers.Trainer`), "accelerate
save_state", "DCP folder"; and a `.ckpt` file is a "Lightning checkpoint". Files that are
not checkpoint-like (a README, a tokenizer) are listed as skipped, never read as pickles, and
so is a `.bin` that nothing reads as a checkpoint (a raw `numpy.tofile` array:
`bin_files`), given on the command line or met in a walk.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path

from pytest_ckpt.audit import Report, audit_file
from pytest_ckpt.audit.allowlist import Allowlist
from pytest_ckpt.audit.formats.bin_files import NOT_A_CHECKPOINT, is_checkpoint_bin
from pytest_ckpt.audit.formats.dcp import is_member_name
from pytest_ckpt.audit.formats.framework_loaders import (
    ACCELERATE,
    HF_TRAINER,
    TIMM,
    TIMM_FILES,
    FrameworkVerdict,
    judge,
    reader_for,
)
from pytest_ckpt.audit.formats.safetensors import audit_safetensors, looks_like_safetensors
from pytest_ckpt.audit.formats.sb3_zip import audit_sb3_zip, is_sb3_zip
from pytest_ckpt.audit.formats.torch_archive import Unreadable, regular_file_size

CHECKPOINT_SUFFIXES = frozenset(
    {".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".safetensors", ".distcp"}
)
MAX_DEPTH = 32
MAX_ENTRIES = 100_000  # directory entries looked at in one walk
MAX_JSON_BYTES = 64 << 20
SKIPPED = "skipped"  # the `format` of a file listed but not audited
LIGHTNING = "Lightning checkpoint"
DCP = "DCP folder"
_HF_DIR = re.compile(r"checkpoint-\d+")
_HF_FILES = re.compile(r"training_args\.bin|optimizer\.pt|scheduler\.pt|rng_state(_\d+)?\.pth")
_ACCELERATE_FILES = re.compile(r"random_states_\d+\.pkl")
_PICKLE_HEADS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


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
    """The audit of one command-line PATH: a folder (walked, unless it is a DCP folder) or
    one file."""
    if os.path.isdir(path):
        from pytest_ckpt.audit.formats.dcp.folder import audit_dcp_folder, is_dcp_folder

        if is_dcp_folder(path):
            report = audit_dcp_folder(path, allowlist=allowlist, allow=allow)
            return TargetAudit(path, False, [report], [(path, DCP)])  # its "(dcp, ...)" names it
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
    path: str, allowlist: Allowlist, allow: Iterable[str] = (), *, map_location: str | None = None
) -> Report:
    """One file, by what it is (see the module docstring); never raises for a bad file."""
    if is_member_name(os.path.basename(path)):  # only a DCP member's name reaches DCP's check
        from pytest_ckpt.audit.formats.dcp.folder import audit_dcp_target

        dcp_report = audit_dcp_target(path, allowlist=allowlist, allow=allow)
        if dcp_report is not None:
            return dcp_report
    try:
        size = regular_file_size(path)  # the auditor's own check, before anything opens it
    except Unreadable as err:
        return Report(path, None, (), error=str(err))
    kind = _kind(path, size)
    if kind == "not-a-checkpoint":
        return _skipped(path, NOT_A_CHECKPOINT)
    if kind == "safetensors":
        report = audit_safetensors(path)
    elif kind == "sb3":
        report = audit_sb3_zip(path, allowlist)
    elif kind == "json":
        report = check_json(path)
    else:
        report = audit_file(path, allowlist=allowlist, map_location=map_location)
        report.safe_globals  # noqa: B018  the exact list now: a walk must not hold every pickle
        if Path(path).suffix.lower() == ".safetensors":
            report = _with_note(report, "named .safetensors but it is not one: audited as a pickle")
    return _renamed(report, path)


def check_json(path: str) -> Report:
    """A JSON file a framework wrote beside its checkpoints (trainer_state.json): parsed, so
    a corrupt one is said, but nothing in it is code."""
    size = os.path.getsize(path)
    if size > MAX_JSON_BYTES:
        return Report(path, "json", (), summary=f"{size} bytes: too big to check, not read")
    try:
        with open(path, "rb") as handle:
            json.loads(handle.read().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        return Report(path, "json", (), error=f"not valid JSON: {str(err).splitlines()[0]}")
    return Report(path, "json", (), summary="valid JSON, not a checkpoint: nothing in it runs")


def walk_folder(
    root: str, allowlist: Allowlist, allow: Iterable[str] = (), *, map_location: str | None = None
) -> TargetAudit:
    """Every checkpoint-like file under `root`, in name order, each audited once."""
    from pytest_ckpt.audit.formats.dcp.folder import audit_dcp_folder, is_dcp_folder

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
                if is_dcp_folder(entry.path):
                    report = audit_dcp_folder(entry.path, allowlist=allowlist, allow=allow)
                    report = _with_note(_renamed(report, entry.path), DCP)
                    result.reports.append(report)
                    result.layouts.append((entry.path, DCP))
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
            report = _audit_entry(entry.path, allowlist, allow, map_location)
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


def _audit_entry(
    path: str, allowlist: Allowlist, allow: Iterable[str], map_location: str | None
) -> Report:
    """A walked file: audited if checkpoint-like (by suffix or first bytes), checked if JSON,
    else listed as skipped."""
    suffix = Path(path).suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES or suffix == ".json" or _kind(path, None) != "other":
        return audit_one_file(path, allowlist, allow, map_location=map_location)
    return _skipped(path, "not checkpoint-like")


def _kind(path: str, size: int | None) -> str:
    """ "safetensors", "sb3", "json", "checkpoint", "not-a-checkpoint" (a `.bin` of `size`
    bytes nothing reads as one; None: not asked) or "other", by the first bytes before the
    name: a pickle named `.safetensors` is still a pickle (and what torch.load would run)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return "json"
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return "checkpoint"  # the auditor says why it cannot be read
    if looks_like_safetensors(head):
        return "safetensors"
    if head[:4] == b"PK\x03\x04":
        if is_sb3_zip(path):
            return "sb3"
        if suffix in CHECKPOINT_SUFFIXES or _is_torch_zip(path):
            return "checkpoint"
        return "other"  # a zip of something else (a dataset): not a checkpoint
    if head[:2] in _PICKLE_HEADS:
        return "checkpoint"
    if suffix == ".safetensors":
        return "safetensors"  # a broken one: its audit says what is wrong
    if suffix == ".bin" and size is not None and not is_checkpoint_bin(path, size):
        return "not-a-checkpoint"
    return "checkpoint" if suffix in CHECKPOINT_SUFFIXES else "other"


def _is_torch_zip(path: str) -> bool:
    """A zip whose members include a torch.save pickle (`<folder>/data.pkl`)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return True  # damaged: the auditor says how
    return any(n.endswith("/data.pkl") or n.endswith("/constants.pkl") for n in names)


def _skipped(path: str, why: str) -> Report:
    return Report(path, SKIPPED, (), summary=why)


def _renamed(report: Report, path: str) -> Report:
    return report if report.path == path else replace(report, path=path)


def _with_note(report: Report, note: str) -> Report:
    return replace(report, notes=(*report.notes, note))
