"""Audit a Stable-Baselines3 `model.save` zip: what `PPO.load` (any SB3 algorithm's load)
would read from it, statically.

The zip holds torch.save files as members (`policy.pth`, `policy.optimizer.pth`,
`pytorch_variables.pth`), each audited like a checkpoint file, as is every other member
whose extension is `.pth` (SB3's `load_from_zip_file` th.loads them all, sub-folders
included); and a `data` member, JSON
whose top-level values may be `{":type:": ..., ":serialized:": BASE64}`: a cloudpickle blob
that SB3's `json_to_data` hands to `cloudpickle.loads` whatever `weights_only` says, unless
the key is given in `custom_objects`. Each blob is decoded and run through the static
auditor only to name what it would import; nothing is unpickled. A blob that names a
global (or uses an opcode that can call one) is a finding; one of primitives only, a note.
A zip with two members of one name is refused: SB3 reads them through Python's `zipfile`,
which takes the last copy, whatever the first one shows.

`FORMAT` is the SB3 zip in the formats table (`audit.formats.table`), ahead of the torch
file: both are zips, and an SB3 zip's members sit at the top, never in one folder.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import zipfile
from collections.abc import Iterator
from typing import IO

from pytest_ckpt.audit import Report, audit_file
from pytest_ckpt.audit.allowlist import Allowlist
from pytest_ckpt.audit.escape import shown
from pytest_ckpt.audit.formats import Format, Probe
from pytest_ckpt.audit.formats.zip_directory import duplicated_member
from pytest_ckpt.audit.nodes import Finding
from pytest_ckpt.audit.opcodes import CODE_RUNNING, MalformedPickle, TruncatedPickle, iter_ops

SERIALIZED = ":serialized:"
MAX_MEMBERS = 10_000
MAX_DATA_BYTES = 64 << 20  # the JSON `data` member
MAX_IN_MEMORY = 256 << 20  # a .pth member up to this size is read into memory, else streamed
_FIX = (
    "load it only if you trust where it came from, or pass this key in custom_objects= "
    "(SB3 then skips unpickling it); to share weights, save policy.state_dict() instead"
)


def is_sb3_zip(path: str | os.PathLike[str]) -> bool:
    """A zip laid out as SB3 writes it: top-level `data` or `*.pth` members, or SB3's
    version marker; never a torch.save archive (whose members sit in one folder)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()[: MAX_MEMBERS + 1]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False
    top = [n for n in names if "/" not in n]
    return (
        "data" in top or "_stable_baselines3_version" in top or any(n.endswith(".pth") for n in top)
    )


def audit_sb3_zip(path: str | os.PathLike[str], allowlist: Allowlist) -> Report:
    """The audit of one SB3 zip: findings by member (`policy.pth:root[...]`, `data['x']`)."""
    name = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_MEMBERS:
                return Report(name, "sb3-zip", (), error=f"over {MAX_MEMBERS} zip members")
            duplicate = duplicated_member([info.filename for info in infos])
            if duplicate is not None:
                return Report(name, "sb3-zip", (), error=_duplicate_error(*duplicate))
            findings: list[Finding] = []
            notes: list[str] = []
            errors: list[str] = []
            storages = 0
            data = next((i for i in infos if i.filename == "data"), None)
            if data is not None:
                _audit_data(archive, data, allowlist, findings, notes, errors)
            pth = [i for i in infos if os.path.splitext(i.filename)[1] == ".pth"]
            for info in pth:
                with _member_stream(archive, info, name) as stream:
                    report = audit_file(stream, allowlist=allowlist)
                member = shown(info.filename)
                storages += report.storages
                if report.error is not None:
                    errors.append(f"member {member}: {report.error}")
                for finding in report.findings:
                    finding.path = f"{member}:{finding.path}"
                    findings.append(finding)
                notes += [f"member {member}: {note}" for note in report.notes]
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as err:
        return Report(name, "sb3-zip", (), error=f"corrupt zip archive: {err}")
    if data is None and not pth:
        errors.append("neither a data member nor .pth members: not an SB3 model.save zip")
    notes += [f"also unreadable: {e}" for e in errors[1:]]
    summary = f"{len(pth)} .pth member(s), {storages} storages; data member without pickles"
    return Report(
        name,
        "sb3-zip",
        tuple(findings),
        error=errors[0] if errors else None,
        storages=storages,
        notes=tuple(notes),
        summary=summary,
    )


def _duplicate_error(member: str, count: int) -> str:
    return (
        f"zip member {shown(member)} appears {count} times: SB3's load reads members through "
        "Python's zipfile, which reads the last copy, whatever the others show; refusing the "
        "archive (fix: save the model again with model.save, which writes each member once)"
    )


def _member_stream(archive: zipfile.ZipFile, info: zipfile.ZipInfo, zip_name: str) -> IO[bytes]:
    """A seekable stream of one member, named `zip:member` for the reports it appears in."""
    if info.file_size <= MAX_IN_MEMORY:
        with archive.open(info) as handle:
            stream: IO[bytes] = io.BytesIO(handle.read(MAX_IN_MEMORY + 1))
    else:
        stream = archive.open(info)  # seekable; slower, but never the whole member in memory
    stream.name = f"{zip_name}:{info.filename}"  # type: ignore[misc]
    return stream


def _audit_data(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    allowlist: Allowlist,
    findings: list[Finding],
    notes: list[str],
    errors: list[str],
) -> None:
    if info.file_size > MAX_DATA_BYTES:
        errors.append(f"the data member declares {info.file_size} bytes: refusing")
        return
    with archive.open(info) as handle:
        raw = handle.read(MAX_DATA_BYTES + 1)
    try:
        entries = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        errors.append(f"the data member is not JSON (SB3's load fails on it): {err}")
        return
    if not isinstance(entries, dict):
        errors.append("the data member is not a JSON object (SB3's load fails on it)")
        return
    harmless = []
    for key, blob in _serialized_entries(entries, errors):
        where = f"data[{shown(key)}]"
        names, calls = _what_it_imports(blob, allowlist)
        if not calls:
            harmless.append(where)
            continue
        imports = ", ".join(shown(n, 80) for n in names[:5]) or "no named global"
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        findings.append(
            Finding(
                "cloudpickle",
                f"a cloudpickled value ({len(blob)} bytes) that SB3's load unpickles "
                f"whatever weights_only says; it imports or calls {imports}{more}",
                None,
                _FIX,
                False,
                0,
                where,
            )
        )
    if harmless:
        notes.append(
            f"{len(harmless)} cloudpickled entr(ies) of primitives only (nothing to import): "
            f"{', '.join(harmless[:3])}"
        )


def _serialized_entries(entries: dict, errors: list[str]) -> Iterator[tuple[str, bytes]]:
    """(key, blob) for each top-level value SB3 would unpickle; nested ones it leaves as is."""
    for key, value in entries.items():
        if not (isinstance(value, dict) and SERIALIZED in value):
            continue
        text = value[SERIALIZED]
        if not isinstance(text, str):
            errors.append(f"data[{shown(key)}]: {SERIALIZED} is not a base64 string")
            continue
        try:
            yield key, base64.b64decode(text.encode("ascii", "replace"))
        except (binascii.Error, ValueError) as err:
            errors.append(f"data[{shown(key)}]: {SERIALIZED} is not base64 ({err})")


def _what_it_imports(blob: bytes, allowlist: Allowlist) -> tuple[list[str], bool]:
    """The globals a pickle names (by the static auditor) and whether it can call anything.
    A blob that is not a whole pickle counts as able to: cloudpickle would still try it."""
    stream = io.BytesIO(blob)
    stream.name = "<cloudpickle blob>"
    report = audit_file(stream, allowlist=allowlist)
    names = sorted({f.global_name for f in report.findings if f.global_name})
    try:
        calls = any(op.name in CODE_RUNNING for op in iter_ops(blob))
    except (TruncatedPickle, MalformedPickle):
        calls = True
    return names, calls or bool(names) or report.error is not None


def _is_sb3_probe(probe: Probe) -> bool:
    return probe.zip and is_sb3_zip(probe.path)


def _audit_as_format(
    path: str, allowlist: Allowlist, *, allow: tuple[str, ...], map_location: str | None
) -> Report:
    """`audit_sb3_zip`, which takes no `map_location`: the `.pth` members are audited as
    `torch.load` without one would read them (as before the formats table)."""
    return audit_sb3_zip(path, allowlist)


FORMAT = Format("SB3 zip", _is_sb3_probe, _audit_as_format)
