"""Tensor items proven to be another item torch's reader has opened, but for their data.

DCP torch.saves every tensor chunk as its own small zip archive, and a model's chunks of
one shape and dtype are the same archive but for three things: the tensor's bytes, their
CRC, and the archive's serialization id (a string torch derives from the CRCs and keeps).
Opening each with torch's archive reader costs ~40 us of Python callbacks (4096 tensors:
most of a folder audit once `.metadata` is fast). Here the first item of each length is
opened by torch's reader as before, and becomes a template when its zip layout is the
canonical one torch writes (a central directory of stored entries, data descriptors, no
extra fields, every read torch made within the first and last block the slice caches). A
later item of that length gets the template's answer only when its bytes equal the
template's everywhere in those blocks except:

- the payload of each `data/<key>` record and its two CRC fields (the data descriptor's,
  the central directory's): opening an archive never extracts a storage record;
- the serialization id's payload and CRC fields, which must be consistent (its CRC is the
  zlib CRC-32 of its payload in both places), so that a reader that checks CRCs on what it
  extracts would accept it as well.

Everything else torch reads (the directory, every other record, data.pkl) is byte for byte
the template's, so its answer (records, sizes, the pickle) is the template's. Anything
else is opened by torch's reader; `tests/distributed/test_item_templates.py` holds this
against torch's reader on mutated items.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from pytest_ckpt.audit.formats.torch_archive import Checkpoint, open_checkpoint

_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_LOCATOR = b"PK\x06\x07"
_ENTRY = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_DESCRIPTOR = b"PK\x07\x08"
_SERIALIZATION_ID = ".data/serialization_id"
_MAX_TEMPLATES = 64  # lengths remembered per audit (~16 KB each at most)
_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from


class _NotCanonical(Exception):
    pass


@dataclass(slots=True, frozen=True)
class _Template:
    """What an item of this length holds where torch's reader looks, but for its data: the
    bytes at offsets of the two reads `ItemTemplates.prove` makes, the head (the item's
    first `head_end` bytes) and the tail (from `tail_begin` to the item's end); the masked
    ranges (a storage's data, CRCs, the serialization id) are in neither."""

    head: Callable[[bytes], tuple[bytes, ...]]  # the compared ranges of the head, cut out
    head_bytes: tuple[bytes, ...]  # what they hold
    tail: Callable[[bytes], tuple[bytes, ...]]  # the same for the tail
    tail_bytes: tuple[bytes, ...]
    id_fields: tuple[tuple[int, int], ...]  # serialization id's payload, its two CRCs: (read
    id_length: int  # 0 the head, 1 the tail; offset in it); the payload's length
    checkpoint: Checkpoint
    head_end: int
    tail_begin: int
    tail_length: int  # the item's length less tail_begin


class _RecordingSlice:
    """The slice as torch's reader sees it, noting where each read lands."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.reads: list[tuple[int, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def readinto(self, buffer: Any) -> int:
        start = self._stream.tell()
        count = self._stream.readinto(buffer)
        self.reads.append((start, start + count))
        return count

    def read(self, size: int = -1) -> bytes:
        start = self._stream.tell()
        data = self._stream.read(size)
        self.reads.append((start, start + len(data)))
        return data


def _blocks(stream: Any) -> tuple[bytes, int, bytes, int]:
    """(head bytes, where the tail starts, tail bytes, length): the two cached blocks."""
    length, block = stream.length, stream.BLOCK
    head = stream.read_at(0, min(block, length))
    tail_start = max(0, length - block)
    return head, tail_start, stream.read_at(tail_start, length - tail_start), length


def _byte_at(head: bytes, tail_start: int, tail: bytes, offset: int, count: int) -> bytes:
    if offset + count <= len(head):
        return head[offset : offset + count]
    if offset >= tail_start:
        return tail[offset - tail_start : offset - tail_start + count]
    raise _NotCanonical("outside the cached blocks")


def _layout(head: bytes, tail_start: int, tail: bytes, length: int) -> tuple[list, tuple]:
    """The masked ranges and the serialization id's fields, from the central directory;
    raises _NotCanonical for any layout but torch's."""

    def at(offset: int, count: int) -> bytes:
        return _byte_at(head, tail_start, tail, offset, count)

    eocd = length - 22
    if at(eocd, 4) != _EOCD or at(eocd - 20, 4) != _LOCATOR:
        raise _NotCanonical("no zip64 end of central directory where torch puts it")
    record = _U64(at(eocd - 12, 8))[0]
    if at(record, 4) != _EOCD64:
        raise _NotCanonical("zip64 record")
    count, size, start = (_U64(at(record + offset, 8))[0] for offset in (32, 40, 48))
    if start + size != record:
        raise _NotCanonical("directory not just before its end record")
    masks: list[tuple[int, int]] = []
    id_fields = None
    entry = start
    for _ in range(count):
        fields = at(entry, 46)
        if fields[:4] != _ENTRY or _U16(fields, 10)[0] != 0:  # stored, not compressed
            raise _NotCanonical("entry")
        name_length, extra, comment = (_U16(fields, offset)[0] for offset in (28, 30, 32))
        stored, local = _U32(fields, 20)[0], _U32(fields, 42)[0]
        name = at(entry + 46, name_length).decode("utf-8", "replace")
        if extra or comment or not _U16(fields, 8)[0] & 0x8:  # a data descriptor follows
            raise _NotCanonical("entry fields")
        local_fields = at(local, 30)
        if local_fields[:4] != _LOCAL:
            raise _NotCanonical("local header")
        payload = local + 30 + _U16(local_fields, 26)[0] + _U16(local_fields, 28)[0]
        descriptor = payload + stored
        record_name = name.split("/", 1)[-1]
        if record_name.startswith("data/") or record_name == _SERIALIZATION_ID:
            if at(descriptor, 4) != _DESCRIPTOR:
                raise _NotCanonical("data descriptor")
            masks += [(payload, descriptor), (descriptor + 4, descriptor + 8)]
            masks.append((entry + 16, entry + 20))
            if record_name == _SERIALIZATION_ID:
                id_fields = (payload, stored, entry + 16, descriptor + 4)
        entry += 46 + name_length
    if entry != record or id_fields is None:
        raise _NotCanonical("directory size")
    return masks, id_fields


def _segments(masks: list, head_length: int, tail_start: int, length: int) -> tuple:
    """The head and tail blocks, less the masked ranges."""
    covered = [(0, head_length), (max(tail_start, head_length), length)]
    segments = []
    for begin, end in covered:
        cursor = begin
        for mask_begin, mask_end in sorted(masks):
            if mask_end <= cursor or mask_begin >= end:
                continue
            if mask_begin > cursor:
                segments.append((cursor, mask_begin))
            cursor = max(cursor, mask_end)
        if cursor < end:
            segments.append((cursor, end))
    return tuple(segments)


def _union(head: bytes, tail_start: int, tail: bytes) -> tuple[bytes, int, int]:
    """The two blocks as one string: (bytes, where the tail's part starts in it, the item
    offset that lands there)."""
    overlap = max(0, len(head) - tail_start)
    return head + tail[overlap:], len(head), tail_start + overlap


def _mapped(offset: int, end: int, union_tail: int, item_tail: int) -> tuple[int, int]:
    """An item range [offset, end) as a range of `_union`'s string."""
    if end <= union_tail:
        return offset, end
    if offset >= item_tail:
        return offset - item_tail + union_tail, end - item_tail + union_tail
    raise _NotCanonical("a range across the blocks' gap")


def _id_consistent(union: bytes, fields: tuple) -> bool:
    payload, length, crc_entry, crc_descriptor = fields
    crc = zlib.crc32(union[payload : payload + length])
    return _U32(union, crc_entry)[0] == crc and _U32(union, crc_descriptor)[0] == crc


def _cutter(ranges: list[tuple[int, int]]) -> Callable[[bytes], tuple[bytes, ...]]:
    """The bytes in `ranges` of a string, cut out in one C call: an itemgetter of slices
    (led by an empty one, so that it gives a tuple for one range, or none, as well)."""
    return itemgetter(slice(0, 0), *(slice(begin, end) for begin, end in ranges))


def _matches(template: _Template, head: bytes, tail: bytes) -> bool:
    """Whether an item's head and tail (the two reads `ItemTemplates.prove` makes) hold
    the template's bytes and a consistent serialization id."""
    if len(head) < template.head_end or len(tail) < template.tail_length:
        return False
    if template.head(head) != template.head_bytes or template.tail(tail) != template.tail_bytes:
        return False
    reads = (head, tail)
    (payload_in, payload), (entry_in, entry), (descriptor_in, descriptor) = template.id_fields
    crc = zlib.crc32(reads[payload_in][payload : payload + template.id_length])
    return (
        _U32(reads[entry_in], entry)[0] == crc and _U32(reads[descriptor_in], descriptor)[0] == crc
    )


def _read(handle: Any, fd: int | None, count: int, at: int) -> bytes:
    """`count` bytes at offset `at` of the file (fewer at its end): one positional read
    when it has a descriptor (no seek, no buffer copy)."""
    if fd is not None:
        return os.pread(fd, count, at)
    handle.seek(at)
    return handle.read(count)


class ItemTemplates:
    """One per folder audit: `open(stream)` is `archive.open_checkpoint(stream)`, faster.

    Items lie back to back in a shard file: the read of one item's tail goes on through the
    next item's head (as much as its template compares), kept until the next `prove` (one
    buffer, a few KB), so an item proven from a template costs one read."""

    def __init__(self) -> None:
        self._by_length: dict[int, _Template | None] = {}
        self._ahead: tuple[Any, int, bytes, int] | None = None  # file, offset, buffer, from
        self.proven = 0  # items answered from a template (for tests and benchmarks)

    def open(self, stream: Any) -> Checkpoint:
        """torch's reader's answer for this item (raises what open_checkpoint raises)."""
        handle, start = stream.origin
        checkpoint = self.prove(handle, stream.fd, start, stream.length)
        if checkpoint is not None:
            return checkpoint
        if stream.length in self._by_length:  # its template does not prove it, or none
            return open_checkpoint(stream)
        recording = _RecordingSlice(stream)
        checkpoint = open_checkpoint(recording)
        if len(self._by_length) < _MAX_TEMPLATES:
            self._by_length[stream.length] = self._template(stream, recording.reads, checkpoint)
        return checkpoint

    def prove(self, handle: Any, fd: int | None, start: int, length: int) -> Checkpoint | None:
        """What torch's reader gives for the item of `length` bytes at `start` of the open
        file `handle` (`fd`: its descriptor, or None to seek and read) when its bytes prove
        it its template's but for its data; None (open it with the reader) otherwise."""
        ahead, self._ahead = self._ahead, None
        template = self._by_length.get(length)
        if template is None:
            return None
        head_end, tail_begin = template.head_end, template.tail_begin
        head = b""
        if ahead is not None and ahead[0] is handle and ahead[1] == start:
            head = ahead[2][ahead[3] : ahead[3] + head_end]
        if len(head) != head_end:
            head = _read(handle, fd, head_end, start)
        tail = _read(handle, fd, length - tail_begin + head_end, start + tail_begin)
        self._ahead = (handle, start + length, tail, length - tail_begin)  # the next head
        if _matches(template, head, tail):
            self.proven += 1
            return template.checkpoint
        return None

    def _template(self, stream: Any, reads: list, checkpoint: Checkpoint) -> _Template | None:
        if checkpoint.format != "zip":
            return None
        head, tail_start, tail, length = _blocks(stream)
        if not all(end <= len(head) or begin >= tail_start for begin, end in reads):
            return None  # torch read outside the two blocks: not the layout described above
        try:
            masks, (payload, id_length, crc_entry, crc_descriptor) = _layout(
                head, tail_start, tail, length
            )
            union, union_tail, item_tail = _union(head, tail_start, tail)
            segments = tuple(
                _mapped(begin, end, union_tail, item_tail)
                for begin, end in _segments(masks, len(head), tail_start, length)
            )
            id_fields = (
                _mapped(payload, payload + id_length, union_tail, item_tail)[0],
                id_length,
                _mapped(crc_entry, crc_entry + 4, union_tail, item_tail)[0],
                _mapped(crc_descriptor, crc_descriptor + 4, union_tail, item_tail)[0],
            )
            if not _id_consistent(union, id_fields):
                return None
        except (_NotCanonical, struct.error):
            return None
        return _compact(union, segments, id_fields, checkpoint, (union_tail, item_tail, length))


def _compact(
    union: bytes, segments: tuple, id_fields: tuple, checkpoint: Checkpoint, tails: tuple
) -> _Template | None:
    """The template with its ranges moved from `_union`'s string (head block, then what the
    tail block adds from item offset `item_tail`) to the two reads `prove` makes: the head
    up to the end of the last range in it, the tail from the first range in it. What is
    left out is masked bytes only (a storage's data), never compared, never read."""
    union_tail, item_tail, length = tails
    payload, id_length, crc_entry, crc_descriptor = id_fields
    ranges = [*segments, (payload, payload + id_length), (crc_entry, crc_entry + 4)]
    ranges.append((crc_descriptor, crc_descriptor + 4))
    if any(begin < union_tail < end for begin, end in ranges):
        return None  # (`_segments` and `_mapped` never make one)
    head_end = max((end for begin, end in ranges if end <= union_tail), default=0)
    tail_from = min((begin for begin, end in ranges if begin >= union_tail), default=union_tail)

    def moved(offset: int) -> tuple[int, int]:  # (0 the head, 1 the tail; offset in it)
        return (0, offset) if offset < union_tail else (1, offset - tail_from)

    compared: tuple[list, list] = ([], [])  # ranges of the head, of the tail
    for begin, end in segments:
        read, offset = moved(begin)
        compared[read].append((offset, offset + end - begin))
    head, tail = _cutter(compared[0]), _cutter(compared[1])
    tail_begin = tail_from - union_tail + item_tail
    return _Template(
        head,
        head(union),
        tail,
        tail(union[tail_from:]),
        (moved(payload), moved(crc_entry), moved(crc_descriptor)),
        id_length,
        checkpoint,
        head_end,
        tail_begin,
        length - tail_begin,
    )
