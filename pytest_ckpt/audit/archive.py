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
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass, field
from typing import IO, Any

from pytest_ckpt.audit.opcodes import MalformedPickle, TruncatedPickle, end_of_pickle, iter_ops
from pytest_ckpt.errors import Unreadable

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_PICKLE_BYTES = 1 << 30  # a data.pkl larger than this is refused, not read
_USED = frozenset(
    {"data.pkl", "data", "version", ".data", "byteorder", ".format_version", ".storage_alignment"}
)


@dataclass(slots=True)
class Checkpoint:
    format: str  # "zip", "torchscript", "legacy", "raw-pickle"
    pickle: bytes = b""
    pickle_start: int = 0
    storage_sizes: dict[str, int] = field(default_factory=dict)  # key -> bytes (zip only)
    notes: list[str] = field(default_factory=list)


def open_checkpoint(path: str | os.PathLike[str] | IO[bytes]) -> Checkpoint:
    """`path` may also be a seekable binary stream holding one checkpoint from its offset 0
    (a torch.save'd item inside a DCP shard file: `pytest_ckpt.distributed`)."""
    if hasattr(path, "read"):
        return _open_stream(path)  # type: ignore[arg-type]
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except FileNotFoundError:
        raise Unreadable("no such file") from None
    except IsADirectoryError:
        raise Unreadable("is a directory") from None
    except OSError as err:
        raise Unreadable(f"cannot read: {err.strerror or err}") from None
    if not head:
        raise Unreadable("empty file")
    if head == b"PK\x03\x04":
        return _open_zip(path)
    return _open_pickles(path)


def _open_zip(path: str | os.PathLike[str]) -> Checkpoint:
    import torch

    reader = getattr(torch._C, "PyTorchFileReader", None)
    if reader is None or not hasattr(reader, "get_record_size"):
        return _open_zip_with_zipfile(path)
    return _open_zip_with_torch(path, reader)


def _open_zip_with_torch(path: str | os.PathLike[str], reader_class: Any) -> Checkpoint:
    try:
        reader = reader_class(path if hasattr(path, "read") else os.fspath(path))
        if reader.has_record("constants.pkl"):
            return Checkpoint("torchscript")
        if not reader.has_record("data.pkl"):
            raise Unreadable("zip archive without data.pkl: not a torch checkpoint")
        size = reader.get_record_size("data.pkl")
        if size > MAX_PICKLE_BYTES:
            raise Unreadable(f"data.pkl declares {size} bytes: refusing")
        pickle_bytes = reader.get_record("data.pkl")
        sizes: dict[str, int] = {}  # storage key -> bytes
        unused = []
        get_size = reader.get_record_size
        for name in reader.get_all_records():  # one pass: a member per storage
            if name[:5] == "data/":
                sizes[name[5:]] = get_size(name)
            elif name.split("/", 1)[0] not in _USED:
                unused.append(name)
    except RuntimeError as err:
        raise Unreadable(f"torch cannot read the archive: {_first_sentence(err)}") from None
    return Checkpoint("zip", pickle_bytes, 0, sizes, _unused_members_note(unused))


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


def _open_zip_with_zipfile(path: str | os.PathLike[str]) -> Checkpoint:
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
            if "constants.pkl" in records:
                return Checkpoint("torchscript")
            data = records.get("data.pkl")
            if data is None:
                raise Unreadable(f"zip archive without {prefix}/data.pkl: not a torch checkpoint")
            if data.file_size > MAX_PICKLE_BYTES:
                raise Unreadable(f"{prefix}/data.pkl declares {data.file_size} bytes: refusing")
            pickle_bytes = archive.read(data)
            unused = [name for name in records if name.split("/", 1)[0] not in _USED]
            return Checkpoint("zip", pickle_bytes, 0, sizes, _unused_members_note(unused))
    except zipfile.BadZipFile as err:
        raise Unreadable(f"corrupt zip archive: {err}") from None
    except (EOFError, OSError, NotImplementedError, ValueError) as err:
        raise Unreadable(f"corrupt zip archive: {err}") from None


def _open_stream(stream: IO[bytes]) -> Checkpoint:
    stream.seek(0)
    head = stream.read(4)
    stream.seek(0)
    if not head:
        raise Unreadable("empty")
    if head == b"PK\x03\x04":
        return _open_zip(stream)  # type: ignore[arg-type]
    data = stream.read(MAX_PICKLE_BYTES * 4 + 1)
    if len(data) > MAX_PICKLE_BYTES * 4:
        raise Unreadable("not a zip archive and too big to read as a pickle: refusing")
    return _pickles_in(data)


def _open_pickles(path: str | os.PathLike[str]) -> Checkpoint:
    size = os.path.getsize(path)
    if size > MAX_PICKLE_BYTES * 4:
        raise Unreadable(f"{size} bytes and not a zip archive: refusing to read a pickle that big")
    with open(path, "rb") as handle:
        data = handle.read()
    return _pickles_in(data)


def _pickles_in(data: bytes) -> Checkpoint:
    first = _first_value(data)
    if first == LEGACY_MAGIC:
        try:
            after_magic = end_of_pickle(data, 0)
            after_protocol = end_of_pickle(data, after_magic)
            after_sys_info = end_of_pickle(data, after_protocol)
        except (TruncatedPickle, MalformedPickle) as err:
            raise Unreadable(f"legacy checkpoint with a broken header: {err}") from None
        if _first_value(data, after_magic) != LEGACY_PROTOCOL:
            raise Unreadable("legacy checkpoint with an unknown protocol version")
        return Checkpoint("legacy", data, after_sys_info)
    return Checkpoint("raw-pickle", data, 0)


def _first_value(data: bytes, start: int = 0) -> object:
    """The value of a pickle that is one integer (the legacy header), else None."""
    values = []
    try:
        for op in iter_ops(data, start):
            if op.name not in ("PROTO", "FRAME", "STOP"):
                values.append(op.arg)
                if len(values) > 1:
                    return None
    except TruncatedPickle as err:
        raise Unreadable(f"truncated pickle: {err}") from None
    except MalformedPickle as err:
        raise Unreadable(f"not a checkpoint (neither a zip archive nor a pickle): {err}") from None
    return values[0] if len(values) == 1 and isinstance(values[0], int) else None
