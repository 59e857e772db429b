"""Find the pickle(s) inside a checkpoint file, and the sizes of its storages, without
reading tensor bytes.

Formats, as `torch.load` tells them apart: a zip archive (`<prefix>/data.pkl`, where the
prefix is the first member's folder, storages at `<prefix>/data/<key>`; `constants.pkl` marks
a TorchScript archive); the legacy format (a pickled magic number, protocol version and
system info, then the object pickle and the storage keys); anything else that is a pickle is
a raw pickle, which `torch.load` refuses ("Invalid magic number").

Zip archives are read with torch's own archive reader (`torch._C.PyTorchFileReader`, what
`torch.load` opens them with), so which archives open, with which members, is torch's answer
and not an imitation of it; it lists 4096 members in a third of the time `zipfile` takes.
It reads the central directory and data.pkl, nothing else, and unpickles nothing. Where
the installed torch's reader cannot tell member sizes, `zipfile` does the job (it is
stricter: it also checks CRCs, which torch does not).

An archive with two members of one name is refused: torch's reader finds one copy by a
binary search over the sorted names, Python's `zipfile` takes the last, so the copy audited
need not be the copy a reader loads (PITFALLS: "Zip members can share a name").

`FORMAT` is the torch file in the formats table (`audit.formats.table`): one row for the zip,
legacy and raw-pickle kinds, since torch.load reads all three and `open_checkpoint` tells
them apart as it does; its audit is `pytest_ckpt.audit.audit_file`.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pytest_ckpt.audit.formats import CHECKPOINT_SUFFIXES, Format, Probe
from pytest_ckpt.audit.formats.legacy import MAX_PICKLE_BYTES, ReadAt, read_pickles
from pytest_ckpt.audit.formats.zip_directory import (
    duplicate_error,
    unextracted_error,
)
from pytest_ckpt.errors import Unreadable

if TYPE_CHECKING:
    from typing_extensions import TypeIs

    from pytest_ckpt.audit import Report
    from pytest_ckpt.audit.allowlist import Allowlist

_ZIP = b"PK\x03\x04"  # a local file header: what a zip archive starts with
_SMALL_MEMBER = 4096  # byteorder, .storage_alignment, .data/serialization_id: a few bytes
_USED = frozenset(
    {"data.pkl", "data", "version", ".data", "byteorder", ".format_version", ".storage_alignment"}
)


class BinaryStream(Protocol):
    """A readable, seekable binary stream with a `name`: an open file, a `BytesIO`, or a DCP
    byte item's `FileSlice` (an `io.RawIOBase`, so not an `IO[bytes]`)."""

    @property
    def name(self) -> str: ...
    def read(self, size: int = -1, /) -> bytes: ...
    def seek(self, offset: int, whence: int = 0, /) -> int: ...
    def tell(self) -> int: ...


def is_stream(path: str | os.PathLike[str] | BinaryStream) -> TypeIs[BinaryStream]:
    """Whether `path` is an open stream rather than a file's path (streams have `read`)."""
    return hasattr(path, "read")


@dataclass(slots=True)
class Checkpoint:
    format: str  # "zip", "torchscript", "legacy", "raw-pickle"
    pickle: bytes = b""
    pickle_start: int = 0
    storage_sizes: dict[str, int] = field(default_factory=dict)  # key -> bytes (zip only)
    notes: list[str] = field(default_factory=list)
    pickle_starts: list[int] = field(default_factory=list)  # legacy: the five pickles
    read_at: ReadAt | None = None  # legacy: reads the size records after the pickles
    size: int = 0  # of the file, in bytes


def open_checkpoint(path: str | os.PathLike[str] | BinaryStream) -> Checkpoint:
    """`path` may also be a seekable binary stream holding one checkpoint from its offset 0
    (a torch.save'd item inside a DCP shard file: `audit.formats.dcp`)."""
    if is_stream(path):
        return _open_stream(path)
    size = regular_file_size(path)
    unextracted = None
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            if head == _ZIP:  # (before torch's reader: its constructor reads `version`)
                unextracted = unextracted_error(_file_reader(handle), size)
    except OSError as err:
        raise Unreadable(f"cannot read: {err.strerror or err}") from None
    if not head:
        raise Unreadable("empty file")
    if unextracted is not None:
        raise Unreadable(unextracted)
    if head == _ZIP:
        return _open_zip(path)
    return _open_pickles(path, size)


def regular_file_size(path: str | os.PathLike[str]) -> int:
    """The size of `path`, which must be a regular file: a FIFO would block the read forever
    and a device (/dev/zero) never ends, so anything else is refused before it is opened."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise Unreadable("no such file") from None
    except OSError as err:
        raise Unreadable(f"cannot read: {err.strerror or err}") from None
    if stat.S_ISDIR(info.st_mode):
        raise Unreadable("is a directory")
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device, socket or other"
        raise Unreadable(f"not a regular file ({kind}): refusing to read it")
    return info.st_size


def _open_zip(path: str | os.PathLike[str] | BinaryStream) -> Checkpoint:
    import torch

    reader = getattr(torch._C, "PyTorchFileReader", None)
    if reader is None or not hasattr(reader, "get_record_size"):
        return _open_zip_with_zipfile(path)
    return _open_zip_with_torch(path, reader)


def _open_zip_with_torch(
    path: str | os.PathLike[str] | BinaryStream, reader_class: Any
) -> Checkpoint:
    try:
        reader = _torch_reader(path, reader_class)
        names = reader.get_all_records()
        _refuse_duplicates(names)
        if reader.has_record("constants.pkl"):
            return Checkpoint("torchscript")
        if not reader.has_record("data.pkl"):
            raise Unreadable("zip archive without data.pkl: not a torch checkpoint")
        size = reader.get_record_size("data.pkl")
        if size > MAX_PICKLE_BYTES:
            raise Unreadable(_too_big("data.pkl", size))
        _check_small_members(reader.has_record, reader.get_record_size, reader.get_record)
        pickle_bytes = reader.get_record("data.pkl")
        sizes: dict[str, int] = {}  # storage key -> bytes
        unused = []
        get_size = reader.get_record_size
        for name in names:  # one pass: a member per storage
            if name[:5] == "data/":
                sizes[name[5:]] = get_size(name)
            elif name.split("/", 1)[0] not in _USED:
                unused.append(name)
    except RuntimeError as err:
        raise Unreadable(f"torch cannot read the archive: {_first_sentence(err)}") from None
    except UnicodeDecodeError:
        raise Unreadable(
            "a member name of the archive is not UTF-8: torch.load cannot list the archive"
        ) from None
    return Checkpoint("zip", pickle_bytes, 0, sizes, _unused_members_note(unused))


def _torch_reader(path: str | os.PathLike[str] | BinaryStream, reader_class: Any) -> Any:
    """torch's reader on a path, or on an open file where the path is not valid UTF-8 (the
    reader takes str paths only; torch.load itself reads through the open file)."""
    if is_stream(path):
        return reader_class(path)
    name = os.fspath(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        handle = open(path, "rb")  # noqa: SIM115 - the reader reads through it, and owns it
        return reader_class(handle)
    return reader_class(name)


def _refuse_duplicates(names: Sequence[str]) -> None:
    error = duplicate_error(names)
    if error is not None:
        raise Unreadable(error)


def _file_reader(handle: Any) -> ReadAt:
    """Positional reads of an open file, through its descriptor where the OS has pread."""
    if not hasattr(os, "pread"):
        return _stream_reader(handle)
    fd = handle.fileno()
    return lambda offset, count: os.pread(fd, count, offset)


def _stream_reader(stream: Any) -> ReadAt:
    def read_at(offset: int, count: int) -> bytes:
        stream.seek(offset)
        return stream.read(count)

    return read_at


def _too_big(member: str, size: int) -> str:
    return (
        f"{member} inflates to {size} bytes, past the auditor's bound of "
        f"{MAX_PICKLE_BYTES >> 20} MiB: refusing to inflate it (a zip bomb, or a pickle too "
        "big to vouch for)"
    )


def _check_small_members(has: Any, size_of: Any, read: Any) -> None:
    """The archive members torch.load reads besides data.pkl, and the values it refuses:
    `byteorder` must be little or big, `.storage_alignment` an integer, and
    `.data/serialization_id` UTF-8 text (torch reads it as a str)."""
    values = {}
    for name in ("byteorder", ".storage_alignment", ".data/serialization_id"):
        if has(name):
            if size_of(name) > _SMALL_MEMBER:
                raise Unreadable(f"archive member {name} holds {size_of(name)} bytes: corrupt")
            values[name] = bytes(read(name))
    order = values.get("byteorder")
    if order is not None and order not in (b"little", b"big"):
        raise Unreadable(f"archive member byteorder is {order[:20]!r}: torch.load refuses it")
    alignment = values.get(".storage_alignment")
    if alignment is not None:
        try:
            int(alignment)
        except ValueError:
            raise Unreadable(
                f"archive member .storage_alignment is {alignment[:20]!r}, not an integer: "
                "torch.load refuses it"
            ) from None
    serial = values.get(".data/serialization_id")
    if serial is not None:
        try:
            serial.decode("utf-8")
        except UnicodeDecodeError:
            raise Unreadable(
                "archive member .data/serialization_id is not UTF-8: torch.load refuses it"
            ) from None


def _unused_members_note(unused: list[str]) -> list[str]:
    """Members torch.load never reads are harmless to it, but worth a look in a file you did
    not write (a second pickle riding along, for one)."""
    if not unused:
        return []
    names = ", ".join(sorted(unused)[:3])
    return [f"{len(unused)} member(s) of the archive folder torch.load does not read: {names}"]


_TORCH_BOILERPLATE = re.compile(
    r"^\[enforce fail at [^\]]*\] \. |\s+(This is an internal miniz error|\(Could this error).*$"
)


def _first_sentence(err: RuntimeError) -> str:
    """torch's reader errors, in one line, without their source location and boilerplate."""
    lines = str(err).strip().splitlines() or ["unknown error"]
    return _TORCH_BOILERPLATE.sub("", lines[0]).strip()


def _open_zip_with_zipfile(path: str | os.PathLike[str] | BinaryStream) -> Checkpoint:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if not infos:
                raise Unreadable("zip archive with no members")
            prefix = infos[0].filename.split("/", 1)[0]
            folder = prefix + "/"
            cut = len(folder)
            records: dict[str, zipfile.ZipInfo] = {}  # members other than storages
            sizes: dict[str, int] = {}  # storage key -> bytes
            for info in infos:  # one pass: a checkpoint has a member per storage
                name = info.filename
                if name[:cut] != folder:  # torch enforces one archive folder for every member
                    raise Unreadable(
                        f"member {name} is not in the archive folder {folder}: torch.load "
                        f"refuses the archive"
                    )
                if name[cut : cut + 5] == "data/":
                    sizes[name[cut + 5 :]] = info.file_size
                else:
                    records[name[cut:]] = info
            if len(records) + len(sizes) < len(infos):  # two members of one name
                _refuse_duplicates([info.filename[cut:] for info in infos])
            if "constants.pkl" in records:
                return Checkpoint("torchscript")
            data = records.get("data.pkl")
            if data is None:
                raise Unreadable(f"zip archive without {prefix}/data.pkl: not a torch checkpoint")
            if data.file_size > MAX_PICKLE_BYTES:
                raise Unreadable(_too_big(f"{prefix}/data.pkl", data.file_size))
            _check_small_members(
                records.__contains__,
                lambda name: records[name].file_size,
                lambda name: archive.read(records[name]),
            )
            pickle_bytes = archive.read(data)
            unused = [name for name in records if name.split("/", 1)[0] not in _USED]
            return Checkpoint("zip", pickle_bytes, 0, sizes, _unused_members_note(unused))
    except zipfile.BadZipFile as err:
        raise Unreadable(f"corrupt zip archive: {err}") from None
    except (EOFError, OSError, NotImplementedError, ValueError) as err:
        raise Unreadable(f"corrupt zip archive: {err}") from None


def _open_stream(stream: BinaryStream) -> Checkpoint:
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    head = stream.read(4)
    stream.seek(0)
    if not head:
        raise Unreadable("empty")
    if head == _ZIP:
        unextracted = unextracted_error(_stream_reader(stream), size)
        if unextracted is not None:  # (`zip_directory`)
            raise Unreadable(unextracted)
        stream.seek(0)  # where torch's reader starts reading it
        return _open_zip(stream)
    return _non_zip(_stream_reader(stream), size, regular_file=False)


def _open_pickles(path: str | os.PathLike[str], size: int) -> Checkpoint:
    def read_at(offset: int, n: int) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(n)

    return _non_zip(read_at, size, regular_file=True)


def _non_zip(read_at: ReadAt, size: int, *, regular_file: bool) -> Checkpoint:
    kind, data, starts = read_pickles(read_at, size, regular_file=regular_file)
    if kind == "legacy":
        return Checkpoint(kind, data, starts[3], pickle_starts=starts, read_at=read_at, size=size)
    return Checkpoint(kind, data, 0, pickle_starts=starts, size=size)


def is_torch_file(probe: Probe) -> bool:
    """What torch.load has to judge: a zip named as a checkpoint or holding a torch.save
    pickle, a pickle with a protocol header (whatever its name: a pickle named `.safetensors`
    is what torch.load would run), anything else named as a checkpoint, and a file that could
    not be read (its audit says why)."""
    if probe.head is None:
        return True
    if probe.zip:
        return probe.suffix in CHECKPOINT_SUFFIXES or _is_torch_zip(probe.path)
    return probe.pickle or probe.suffix in CHECKPOINT_SUFFIXES


def _is_torch_zip(path: str) -> bool:
    """A zip whose members include a torch.save pickle (`<folder>/data.pkl`)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return True  # damaged: the auditor says how
    return any(n.endswith("/data.pkl") or n.endswith("/constants.pkl") for n in names)


def audit_torch_file(
    path: str, allowlist: Allowlist, *, allow: tuple[str, ...] = (), map_location: str | None
) -> Report:
    """`audit_file` (`allow` is already in `allowlist`), with its exact allowlist found now:
    a walk must not hold every file's pickle until the report is printed."""
    from pytest_ckpt.audit import audit_file  # the package imports this module

    report = audit_file(path, allowlist=allowlist, map_location=map_location)
    report.safe_globals  # noqa: B018  computed and cached, the pickle released
    if Path(path).suffix.lower() == ".safetensors":
        note = "named .safetensors but it is not one: audited as a pickle"
        report = replace(report, notes=(*report.notes, note))
    return report


FORMAT = Format("torch file", is_torch_file, audit_torch_file)
