"""Zip members as torch's reader (miniz) finds them: by name ignoring ASCII case (two names
that differ in case only are duplicates), and from the central directory, which may mark a
member it lists as one it does not extract.

miniz (under `torch._C.PyTorchFileReader`) extracts nothing for a member its central
directory entry marks as a directory (a name ending in `/`, or the MS-DOS directory bit in
its external attributes), and still reports success: torch then returns the buffer it
allocated for the member, uninitialised. A `data.pkl` or `version` read that way is
whatever the heap held, so no verdict on the file holds; torch.save never writes such an
entry. Only the central directory says so, and only the entries of the few members torch
reads by name are looked at (a `bytes.find` each): a state dict's thousands of storage
entries are not parsed.
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from pytest_ckpt.audit.escape import shown
from pytest_ckpt.audit.formats.legacy import ReadAt

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_ENTRY = b"PK\x01\x02"
_ENTRY_SIZE = 46  # the fixed part of a central directory entry, before its name
_MAX_COMMENT = 0xFFFF
_ENDS = 56 + 20 + 22  # zip64 end record, its locator, the end record
_ASCII_UPPER = re.compile("[A-Z]")
_DOS_DIRECTORY = 0x10
_ENTRY_FIELDS = struct.Struct("<28xH8xI")  # name length, external attributes

# the members torch.load reads by name (`version` in its reader's constructor)
READ_BY_NAME = (
    "data.pkl", "version", ".data/version", ".format_version", "byteorder",
    ".storage_alignment", ".data/serialization_id",
)  # fmt: skip


def unextracted_error(read_at: ReadAt, size: int) -> str | None:
    """Why torch's reading of this archive holds no verdict, or None: a member it reads by
    name (`READ_BY_NAME`) that it would get uninitialised."""
    member = unextracted_member(read_at, size, READ_BY_NAME)
    if member is None:
        return None
    return (
        f"archive member {member} is marked as a directory: torch's reader extracts nothing "
        "for it and reads its buffer uninitialised, so no verdict holds (fix: re-save the "
        "checkpoint with torch.save)"
    )


def unextracted_member(read_at: ReadAt, size: int, names: Iterable[str]) -> str | None:
    """The first of `names` (member names as torch's reader lists them, without the
    archive's folder) whose entry miniz would not extract; None when there is none, or when
    the central directory is not where the end record says (torch's reader found it, so
    this reading is wrong, not the file: its verdict stands)."""
    directory = _central_directory(read_at, size)
    if directory is None or not directory.startswith(_ENTRY):
        return None
    (first_length,) = struct.unpack_from("<H", directory, 28)
    first = directory[_ENTRY_SIZE : _ENTRY_SIZE + first_length]
    folder = first[: first.find(b"/") + 1]  # torch's members share the first one's folder
    folded = directory.lower()  # miniz finds a name ignoring (ASCII) case, as bytes.lower
    for name in names:
        full = (folder + name.encode("utf-8")).lower()
        at = folded.find(full, _ENTRY_SIZE)
        while at != -1:  # every entry of that name: which one miniz finds is its choice
            entry = at - _ENTRY_SIZE
            if directory.startswith(_ENTRY, entry):
                length, attributes = _ENTRY_FIELDS.unpack_from(directory, entry)
                if length == len(full) and attributes & _DOS_DIRECTORY:
                    return name
            at = folded.find(full, at + 1)
    return None


def _central_directory(read_at: ReadAt, size: int) -> bytes | None:
    """The central directory's bytes, found through the end record, or the zip64 one when
    its locator precedes the end record (as miniz reads it); None if the archive does not
    lead to one. One read takes the end record with the zip64 ones torch.save puts before it."""
    tail = read_at(size - min(size, _ENDS), min(size, _ENDS))
    end = len(tail) - 22 if tail[-22:].startswith(_EOCD) else -1
    if end == -1:  # a comment follows the end record (torch.save writes none)
        tail = read_at(size - min(size, 22 + _MAX_COMMENT), min(size, 22 + _MAX_COMMENT))
        end = tail.rfind(_EOCD)
        if end == -1 or len(tail) - end < 22:
            return None
    length, offset = struct.unpack_from("<12xII", tail, end)
    start = size - len(tail)  # the file offset of tail[0]
    locator = tail[end - 20 : end] if end >= 20 else b""
    if not locator and start + end >= 20:
        locator = read_at(start + end - 20, 20)
    if locator.startswith(_EOCD64_LOCATOR):
        (record_at,) = struct.unpack_from("<8xQ", locator)  # miniz reads that record's
        inside = start <= record_at and record_at + 56 <= start + len(tail)  # fields then
        record = tail[record_at - start :][:56] if inside else read_at(record_at, 56)
        if record.startswith(_EOCD64):
            length, offset = struct.unpack_from("<40xQQ", record)
    if offset + length > size:
        return None
    return read_at(offset, length)


def duplicated_member(names: Sequence[Any]) -> tuple[Any, int] | None:
    """The first member name that appears more than once in `names`, and how often; None
    when every name is unique (the common case costs one set of the names)."""
    if len(set(names)) == len(names):
        return None
    counts = Counter(names)
    name = next(n for n in names if counts[n] > 1)
    return name, counts[name]


def duplicate_error(names: Sequence[str]) -> str | None:
    """Why a name given twice leaves no verdict, or None; ASCII case is ignored as torch's
    reader (miniz) looks names up: `version` and `VERSION` are one member to it, and which
    it reads is its choice."""
    duplicate = duplicated_member(names)
    ignoring = ""
    if duplicate is None and _ASCII_UPPER.search("".join(names)):
        folded = [name.encode("utf-8", "surrogatepass").lower() for name in names]
        if (again := duplicated_member(folded)) is not None:
            duplicate, ignoring = (names[folded.index(again[0])], again[1]), " (ignoring case)"
    if duplicate is None:
        return None
    name, count = duplicate
    return (
        f"zip member {shown(name)} appears {count} times{ignoring}: torch's reader and "
        "Python's zipfile can pick different copies, so no one verdict holds for the file; "
        "refusing it (fix: re-save it with torch.save, which writes each member once)"
    )
