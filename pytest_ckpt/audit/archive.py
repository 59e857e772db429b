"""Find the pickle(s) inside a checkpoint file, and the sizes of its storages, without
reading tensor bytes.

Formats, as `torch.load` tells them apart: a zip archive (`<prefix>/data.pkl`, where the
prefix is the first member's folder, storages at `<prefix>/data/<key>`; `constants.pkl` marks
a TorchScript archive); the legacy format (a pickled magic number, protocol version and
system info, then the object pickle and the storage keys); anything else that is a pickle is
a raw pickle, which `torch.load` refuses ("Invalid magic number").
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field

from pytest_ckpt.audit.opcodes import MalformedPickle, TruncatedPickle, end_of_pickle, iter_ops

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_PICKLE_BYTES = 1 << 30  # a data.pkl larger than this is refused, not read
_USED = frozenset(
    {"data.pkl", "data", "version", ".data", "byteorder", ".format_version", ".storage_alignment"}
)


class Unreadable(Exception):
    """The file cannot be read as a checkpoint at all (exit status 2)."""


@dataclass(slots=True)
class Checkpoint:
    format: str  # "zip", "torchscript", "legacy", "raw-pickle"
    pickle: bytes = b""
    pickle_start: int = 0
    storage_sizes: dict[str, int] = field(default_factory=dict)  # key -> bytes (zip only)
    notes: list[str] = field(default_factory=list)


def open_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
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
            checkpoint = Checkpoint("zip", pickle_bytes, 0, sizes)
            unused = sorted(name for name in records if name.split("/", 1)[0] not in _USED)
            if unused:
                checkpoint.notes.append(
                    f"{len(unused)} member(s) torch.load does not read: "
                    f"{', '.join(f'{prefix}/{name}' for name in unused[:3])}"
                )
            return checkpoint
    except zipfile.BadZipFile as err:
        raise Unreadable(f"corrupt zip archive: {err}") from None
    except (EOFError, OSError, NotImplementedError, ValueError) as err:
        raise Unreadable(f"corrupt zip archive: {err}") from None


def _open_pickles(path: str | os.PathLike[str]) -> Checkpoint:
    size = os.path.getsize(path)
    if size > MAX_PICKLE_BYTES * 4:
        raise Unreadable(f"{size} bytes and not a zip archive: refusing to read a pickle that big")
    with open(path, "rb") as handle:
        data = handle.read()
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
