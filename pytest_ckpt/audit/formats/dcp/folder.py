"""`pytest-ckpt audit DIR` for a DCP folder: will `dcp.load` read it without running code,
and is what it describes there?

A DCP folder is a `.metadata` (a pickle of DCP's dataclasses) and the `.distcp` shard files
it points into. The audit, like the file auditor, runs nothing from the folder and never
reads tensor bytes:

1. `.metadata` goes through the static machine against DCP's metadata allowlist; any other
   global is a finding by path, and then nothing else is read (it is not safe to).
2. Otherwise it is unpickled by the restricted unpickler (DCP's dataclasses only) and held
   against the files: every `storage_data` entry must lie inside an existing shard file of
   the folder; each tensor's chunks must tile it (`chunks`); each chunk's item must declare
   the dtype and shape the metadata gives it; every chunk and byte item must have its entry.
3. Byte items (values DCP torch.saves, and its default planner loads with
   `weights_only=False`) get the weights_only auditor's verdict, findings by path.

Exit statuses as for files: unreadable (2) when `.metadata` itself cannot be read (missing,
empty, truncated, corrupt, not DCP Metadata); otherwise every problem is a finding (1).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from pytest_ckpt.audit import Report, audit_file
from pytest_ckpt.audit.allowlist import Allowlist, load_allowlist
from pytest_ckpt.audit.formats.dcp import METADATA, SHARD_SUFFIX, is_member_name
from pytest_ckpt.audit.formats.dcp.chunks import chunk_problems
from pytest_ckpt.audit.formats.dcp.item_templates import ItemTemplates
from pytest_ckpt.audit.formats.dcp.items import (
    FileSlice,
    PlainTensors,
    read_tensor_item,
    tensor_item,
)
from pytest_ckpt.audit.formats.torch_archive import Unreadable
from pytest_ckpt.audit.machine import gc_paused
from pytest_ckpt.audit.nodes import Finding
from pytest_ckpt.audit.opcodes import MalformedPickle, TruncatedPickle
from pytest_ckpt.errors import CheckpointLoadError

_RESAVE = "re-save the checkpoint; if it was copied, copy the whole folder again"


def is_dcp_folder(path: str | os.PathLike[str]) -> bool:
    """A folder holding a DCP `.metadata` file (what `audit_dcp_folder` audits)."""
    return os.path.isfile(os.path.join(path, METADATA))


def dcp_folder_of(path: str | os.PathLike[str]) -> Path | None:
    """The folder a DCP member file (`.metadata`, `__0_0.distcp`) belongs to, else None."""
    file = Path(path)
    if file.is_file() and is_member_name(file.name):
        return file.parent
    return None


def audit_dcp_target(
    path: str | os.PathLike[str], *, allowlist: Allowlist | None = None, allow: Iterable[str] = ()
) -> Report | None:
    """The CLI's answer for a DCP folder, or for one of its files (audit the folder
    instead); None for anything else (a file for the file auditor)."""
    if is_dcp_folder(path):
        return audit_dcp_folder(path, allowlist=allowlist, allow=allow)
    folder = dcp_folder_of(path)
    if folder is None:
        return None
    if is_dcp_folder(folder):
        hint = f"audit the folder: pytest-ckpt audit {folder}"
    else:
        hint = f"its folder {folder} has no {METADATA} (a save that did not finish?)"
    return Report(os.fspath(path), "dcp", (), error=f"part of a DCP folder, {hint}")


def audit_dcp_folder(
    path: str | os.PathLike[str], *, allowlist: Allowlist | None = None, allow: Iterable[str] = ()
) -> Report:
    """Audit one DCP folder. `allowlist`: the weights_only allowlist for byte items and tensor
    items (default: torch's plus `allow`); `allow`: extra names for `.metadata` too."""
    allow = tuple(allow)
    with gc_paused():
        return _audit_folder(Path(path), allowlist or load_allowlist(allow), allow)


def _audit_folder(folder: Path, allowlist: Allowlist, allow: tuple[str, ...]) -> Report:
    import torch.distributed as dist

    name = os.fspath(folder)
    if not dist.is_available():
        return Report(name, "dcp", (), error="this torch build has no torch.distributed")
    from pytest_ckpt.audit.formats.dcp.metadata_allowlist import load_dcp_allowlist
    from pytest_ckpt.audit.formats.dcp.metadata_scan import scan_metadata
    from pytest_ckpt.audit.formats.dcp.metadata_unpickle import (
        read_metadata_bytes,
        scan_rank_local,
        unpickle_metadata_restricted,
    )

    if not folder.is_dir():
        return Report(name, "dcp", (), error="no such folder")
    meta = folder / METADATA
    try:
        data = read_metadata_bytes(meta)
        dcp_allowlist = load_dcp_allowlist(allow)
    except FileNotFoundError:
        return Report(name, "dcp", (), error=f"no {METADATA}: not a DCP folder")
    except (OSError, CheckpointLoadError, ValueError) as err:
        return Report(name, "dcp", (), error=str(err))
    if not data:
        return Report(name, "dcp", (), error=f"empty {METADATA}")
    try:
        findings = scan_metadata(data, dcp_allowlist)
    except TruncatedPickle as err:
        return Report(name, "dcp", (), error=f"truncated {METADATA}: {err}")
    except MalformedPickle as err:
        return Report(name, "dcp", (), error=f"corrupt {METADATA}: {err}")
    rank_local, rank_findings = scan_rank_local(folder, dcp_allowlist)
    if findings:
        note = f"the shard files were not checked: {METADATA} is not safe to unpickle"
        return Report(name, "dcp", (*findings, *rank_findings), notes=(note,))
    try:
        metadata = unpickle_metadata_restricted(data, dcp_allowlist, source=os.fspath(meta))
    except CheckpointLoadError as err:
        return Report(name, "dcp", (), error=str(err).removeprefix(f"{meta}: "))
    report = _FolderCheck(folder, allowlist).run(metadata)
    if not rank_local:
        return report
    note = (
        f"{len(rank_local)} rank-local metadata file(s) scanned ({', '.join(rank_local[:3])}): "
        f"dcp.load reads one when it cannot read {METADATA}"
    )
    return dataclasses.replace(
        report, findings=(*report.findings, *rank_findings), notes=(*report.notes, note)
    )


def _check_as_dcp_reads_it(metadata: Any) -> None:
    """What DCP uses as it is, as DCP writes it (a TypeError, made a finding, otherwise):
    `storage_meta` None or a StorageMeta (FileSystemReader sets its `load_id`: on anything
    else that may raise, and dcp.load then reads a rank-local `__<rank>.metadata`), and
    the two dicts."""
    from torch.distributed.checkpoint.metadata import StorageMeta

    storage_meta = getattr(metadata, "storage_meta", None)  # as FileSystemReader reads it
    if storage_meta is not None and type(storage_meta) is not StorageMeta:
        raise TypeError(
            f"storage_meta is a {type(storage_meta).__name__}, not StorageMeta: dcp.load's "
            f"reader fails setting its load_id, and falls back to a rank-local metadata file"
        )
    for field in ("state_dict_metadata", "storage_data"):
        kind = type(getattr(metadata, field))
        if kind is not dict:
            raise TypeError(f"{field} is a {kind.__name__}, not a dict: dcp.load reads it as one")


def _where(fqn: str) -> str:
    """Where a finding about the tensor or byte item `fqn` of the metadata is."""
    return f"state_dict_metadata[{fqn!r}]"


def _storage_where(fqn: str) -> str:
    """Where a finding about the storage_data entry of `fqn` is."""
    return f"storage_data[{fqn!r}]"


class _FolderCheck:
    """The metadata held against the shard files. One instance per audit."""

    def __init__(self, folder: Path, allowlist: Allowlist) -> None:
        self.folder = folder
        self.allowlist = allowlist
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self.handles: dict[str, IO[bytes]] = {}
        self.sizes: dict[str, int | None] = {}
        self.untransformed = True
        self.seen_tensor_items: dict[Any, Any] = {}  # see items.read_tensor_item
        self.item_templates = ItemTemplates()
        self.plain = PlainTensors(
            self.item_templates,
            lambda checkpoint: tensor_item(checkpoint, allowlist, self.seen_tensor_items),
        )

    def flag(self, kind: str, where: str, detail: str, fix: str, offset: int = 0) -> None:
        self.findings.append(Finding(kind, detail, None, fix, False, offset, where))

    def run(self, metadata: Any) -> Report:
        try:
            counts = self._check(metadata)
        except (AttributeError, TypeError, ValueError) as err:  # allow-listed, but ill-formed
            self.flag(
                "dcp-malformed",
                METADATA,
                f"the metadata does not have DCP's structure ({type(err).__name__}: {err})",
                _RESAVE,
            )
            counts = None
        finally:
            for handle in self.handles.values():
                handle.close()
        summary = ""
        if counts is not None:
            tensors, chunks, byte_items = counts
            summary = (
                f"{len(self.handles)} shard file(s), {tensors} tensor(s) in {chunks} chunk(s), "
                f"{byte_items} byte item(s); dcp.load runs none of its code, every chunk is in "
                "place"
            )
        storages = len(getattr(metadata, "storage_data", None) or ())
        return Report(
            os.fspath(self.folder),
            "dcp",
            tuple(self.findings),
            storages=storages,
            notes=tuple(self.notes),
            summary=summary,
        )

    def _check(self, metadata: Any) -> tuple[int, int, int]:
        import torch
        from torch.distributed.checkpoint.metadata import (
            BytesStorageMetadata,
            TensorStorageMetadata,
        )

        _check_as_dcp_reads_it(metadata)
        entries: dict[tuple[str, tuple[int, ...] | None], Any] = {}
        for index, info in metadata.storage_data.items():
            offset = None if index.offset is None else tuple(index.offset)
            entries[(index.fqn, offset)] = info
        used: set[tuple[str, tuple[int, ...] | None]] = set()
        tensors = chunks = byte_items = 0
        pending = iter(metadata.state_dict_metadata.items())
        while True:
            plain, rest = self.plain.take(pending, entries, used)  # what the lines below find
            tensors, chunks = tensors + plain, chunks + plain  # in them: nothing
            if rest is None:
                break
            fqn, entry = rest
            if isinstance(entry, TensorStorageMetadata):
                tensors += 1
                if type(entry.size) is not torch.Size:
                    raise TypeError(
                        f"{_where(fqn)}.size is a {type(entry.size).__name__}, not a "
                        "torch.Size: dcp.load compares it with the tensor's and fails"
                    )
                boxes = [(tuple(c.offsets), tuple(c.sizes)) for c in entry.chunks]
                for problem in chunk_problems(tuple(entry.size), boxes):
                    self.flag("dcp-chunks", _where(fqn), problem, _RESAVE)
                for offsets, sizes in boxes:
                    chunks += 1
                    key = (fqn, offsets)
                    if key not in entries:
                        self._missing(_where(fqn), f"chunk at offsets {list(offsets)}")
                        continue
                    used.add(key)
                    self._tensor_item(fqn, entries[key], str(entry.properties.dtype), sizes)
            elif isinstance(entry, BytesStorageMetadata):
                byte_items += 1
                if (fqn, None) not in entries:
                    self._missing(_where(fqn), "byte item")
                    continue
                used.add((fqn, None))
                self._byte_item(fqn, entries[(fqn, None)])
            else:
                raise TypeError(f"{_where(fqn)} is a {type(entry).__name__}")
        if len(entries) > len(used):
            self.notes.append(
                f"{len(entries) - len(used)} storage_data entr(y/ies) that no tensor or byte "
                "item uses (dcp.load ignores them)"
            )
        unused = sorted(
            p.name
            for p in self.folder.iterdir()
            if p.suffix == SHARD_SUFFIX and p.name not in self.handles
        )
        if unused:
            self.notes.append(f"shard file(s) no entry points into: {', '.join(unused[:3])}")
        if not self.untransformed:
            self.notes.append("items written through stream transforms were not inspected")
        return tensors, chunks, byte_items

    def _missing(self, where: str, what: str) -> None:
        self.flag(
            "dcp-missing-storage",
            where,
            f"the {what} has no storage_data entry: dcp.load cannot read it",
            _RESAVE,
        )

    def _slice(self, fqn: str, info: Any) -> FileSlice | None:
        """The item `info` describes, as a file; None (with a finding) if it is not there."""
        relative, offset, length = info.relative_path, info.offset, info.length
        if not isinstance(relative, str) or (
            relative not in self.sizes and os.path.basename(relative) != relative
        ):  # (a name in `sizes` passed this check before)
            self.flag(
                "dcp-bad-path",
                _storage_where(fqn),
                f"relative_path {relative!r} is not a file name inside the folder",
                "do not load this folder: it points dcp.load at files outside it",
            )
            return None
        if relative not in self.sizes:
            path = self.folder / relative
            self.sizes[relative] = path.stat().st_size if path.is_file() else None
            if self.sizes[relative] is not None:
                self._open(relative, path)
        size = self.sizes[relative]
        if size is None:
            self.flag(
                "dcp-missing-file",
                _storage_where(fqn),
                f"shard file {relative} is missing",
                _RESAVE,
            )
            return None
        if not (isinstance(offset, int) and isinstance(length, int)) or offset < 0 or length < 0:
            self.flag(
                "dcp-out-of-file",
                _storage_where(fqn),
                f"bad offset/length {offset!r}/{length!r}",
                _RESAVE,
            )
            return None
        if offset + length > size:
            self.flag(
                "dcp-out-of-file",
                _storage_where(fqn),
                f"bytes {offset}..{offset + length} of {relative} are past its end ({size} "
                "bytes): the shard file is truncated",
                _RESAVE,
                offset,
            )
            return None
        if getattr(info, "transform_descriptors", None):
            self.untransformed = False
            return None
        return FileSlice(self.handles[relative], offset, length, name=f"{relative}@{offset}")

    def _open(self, relative: str, path: Path) -> None:
        """Open a shard file (closed in `run`) for the items in it."""
        handle = self.handles[relative] = open(path, "rb")  # noqa: SIM115
        fd = handle.fileno() if hasattr(os, "pread") else None  # os.pread is POSIX only
        self.plain.files[relative] = (handle, fd, self.sizes[relative] or 0)

    def _tensor_item(self, fqn: str, info: Any, dtype: str, sizes: tuple[int, ...]) -> None:
        item_file = self._slice(fqn, info)
        if item_file is None:
            return
        try:
            item = read_tensor_item(
                item_file, self.allowlist, self.seen_tensor_items, self.item_templates
            )
        except Unreadable as err:
            where = f"{item_file.name} ({fqn})"
            self.flag("dcp-item-unreadable", where, f"unreadable tensor item: {err}", _RESAVE)
            return
        if item.findings:
            self._take(f"{item_file.name} ({fqn})", item.findings)
        if item.dtype is not None and item.dtype != dtype:
            self.flag(
                "dcp-dtype",
                f"{item_file.name} ({fqn})",
                f"the chunk holds {item.dtype}, the metadata says {dtype} (dcp.load would "
                "cast it silently)",
                _RESAVE,
            )
        if item.shape is not None and item.shape != sizes:
            self.flag(
                "dcp-shape",
                f"{item_file.name} ({fqn})",
                f"the chunk holds shape {list(item.shape)}, the metadata says {list(sizes)}",
                _RESAVE,
            )

    def _byte_item(self, fqn: str, info: Any) -> None:
        item_file = self._slice(fqn, info)
        if item_file is None:
            return
        where = f"{item_file.name} ({fqn})"
        report = audit_file(item_file, allowlist=self.allowlist)
        if report.error is not None:
            self.flag(
                "dcp-item-unreadable", where, f"unreadable byte item: {report.error}", _RESAVE
            )
        self._take(where, report.findings)

    def _take(self, where: str, findings: Iterable[Finding]) -> None:
        for finding in findings:  # copies: a remembered item's findings serve many items
            self.findings.append(dataclasses.replace(finding, path=f"{where}:{finding.path}"))
