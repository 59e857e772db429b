"""The items inside DCP shard files, read statically: each is a `torch.save` archive at an
offset of a `.distcp` file (a tensor chunk, or a non-tensor value: a "byte item").

`FileSlice` shows torch's archive reader one item as if it were a file, so only the item's
zip directory and its `data.pkl` are read, never the tensor bytes. Tensor items are run on
the auditor's machine with one addition, `ShardTensorInterpreter`, which keeps the storage
type and the size a tensor record declares, so that the folder audit can hold them against
the metadata (DCP copies a loaded chunk into its target with `copy_`, which would silently
cast a chunk of the wrong dtype). Byte items get the auditor's plain weights_only verdict
(`audit_file` on a `FileSlice`): DCP's default planner unpickles them with
`torch.load(weights_only=False)`. Most tensor items are read in one step with their
metadata entry (`PlainTensors`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from pytest_ckpt.audit.allowlist import Allowlist
from pytest_ckpt.audit.formats.dcp.chunks import chunk_problems
from pytest_ckpt.audit.formats.dcp.item_templates import ItemTemplates
from pytest_ckpt.audit.formats.torch_archive import Checkpoint, Unreadable, open_checkpoint
from pytest_ckpt.audit.nodes import GLOBAL_TYPE, Finding, Node
from pytest_ckpt.audit.opcodes import MalformedPickle, Op, TruncatedPickle
from pytest_ckpt.audit.verdict import PickleInterpreter

_TENSOR_TYPES = ("torch.Tensor", "torch.nn.parameter.Parameter")


class FileSlice(io.RawIOBase):
    """A read-only, seekable view of `length` bytes at `start` of an open binary file.

    torch's archive reader makes a dozen small reads per item, all in its first few hundred
    bytes (the data.pkl member) or its last few kilobytes (the zip directory): each end is
    read once, in one block, and served from memory; anything else is read through.
    """

    BLOCK = 8192

    def __init__(self, handle: IO[bytes], start: int, length: int, *, name: str) -> None:
        super().__init__()
        self._handle, self._start, self._length, self._pos = handle, start, length, 0
        self._blocks: dict[int, bytes] = {}  # block offset in the slice -> its bytes
        self.name = name
        try:  # os.pread is POSIX only: elsewhere, seek and read
            self._fd: int | None = handle.fileno() if hasattr(os, "pread") else None
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: in memory
            self._fd = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    @property
    def length(self) -> int:
        return self._length

    def read_at(self, offset: int, count: int) -> bytes:
        """`count` bytes at `offset` of the slice, through the same block cache."""
        if offset == 0 and count == min(self.BLOCK, self._length):
            key = 0
        elif offset + count == self._length and offset == max(0, self._length - self.BLOCK):
            key = offset
        else:
            return self._read(offset, count)
        if key not in self._blocks:
            self._blocks[key] = self._read(offset, count)
        return self._blocks[key]

    @property
    def fd(self) -> int | None:
        """The file's descriptor for positional reads; None: seek and read instead."""
        return self._fd

    @property
    def origin(self) -> tuple[IO[bytes], int]:
        """The file the slice is of, and where in it the slice starts."""
        return self._handle, self._start

    def _read(self, offset: int, count: int) -> bytes:
        self._handle.seek(self._start + offset)
        return self._handle.read(count)

    def readinto(self, buffer: Any) -> int:
        count = max(0, min(len(buffer), self._length - self._pos))
        head_end = min(self.BLOCK, self._length)
        tail_start = max(0, self._length - self.BLOCK)
        if self._pos + count <= head_end:
            block_start = 0
        elif self._pos >= tail_start:
            block_start = tail_start
        else:
            block_start = -1
        if block_start < 0:
            data = self._read(self._pos, count)
        else:
            if block_start not in self._blocks:
                end = head_end if block_start == 0 else self._length
                self._blocks[block_start] = self._read(block_start, end - block_start)
            begin = self._pos - block_start
            data = self._blocks[block_start][begin : begin + count]
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


@dataclass(slots=True, frozen=True)
class TensorItem:
    """What a tensor item's pickle declares. `shape` is None past 8 dimensions (the auditor
    keeps short tuples only)."""

    dtype: str | None  # "torch.float32"; None for an untyped storage
    shape: tuple[int, ...] | None
    findings: tuple[Finding, ...]


class ShardTensorInterpreter(PickleInterpreter):
    """The auditor's run of a tensor item, keeping each storage reference's type name."""

    def __init__(self, data: bytes, allowlist: Allowlist, storage_sizes: dict[str, int]) -> None:
        super().__init__(data, allowlist, storage_sizes=storage_sizes, fast_records=False)
        self.storage_types: dict[int, str] = {}  # id(storage node) -> storage type name

    def _op_BINPERSID(self, op: Op) -> None:
        pid = self._top(op)
        super()._op_BINPERSID(op)
        items = pid.items if isinstance(pid, Node) else None
        storage_type = items[1] if items and len(items) == 5 else None
        if isinstance(storage_type, Node) and storage_type.type_name == GLOBAL_TYPE:
            self.storage_types[id(self.stack[-1])] = storage_type.name or "?"


def _storage_dtypes() -> dict[str, str]:
    """Storage type name -> dtype name, from torch's weights_only allowlist."""
    import torch
    import torch._weights_only_unpickler as wo

    return {
        name: str(value.dtype)
        for name, value in wo._get_allowed_globals().items()
        if name.endswith("Storage") and isinstance(getattr(value, "dtype", None), torch.dtype)
    }


_DTYPES: dict[str, str] = {}


def warm_up() -> None:
    """Build what the first tensor item would (for processes forked after this)."""
    if not _DTYPES:
        _DTYPES.update(_storage_dtypes())


def read_tensor_item(
    stream: FileSlice,
    allowlist: Allowlist,
    seen: dict[Any, TensorItem] | None = None,
    templates: ItemTemplates | None = None,
) -> TensorItem:
    """The dtype and shape a tensor item declares, and what torch would refuse in it.
    Raises Unreadable for an item that is not a checkpoint at all.

    `seen`: see `tensor_item`. `templates` (one per audit) answers the archive reader's
    part for items that are another item's archive but for their data."""
    checkpoint = open_checkpoint(stream) if templates is None else templates.open(stream)
    return tensor_item(checkpoint, allowlist, seen)


def tensor_item(
    checkpoint: Checkpoint, allowlist: Allowlist, seen: dict[Any, TensorItem] | None = None
) -> TensorItem:
    """`read_tensor_item` for an item torch's reader has opened. `seen` (one per audit)
    keeps the verdict on each distinct (data.pkl, storage sizes): a model's tensors of one
    shape and dtype pickle to the same bytes, and the verdict is a function of those and
    the allowlist alone."""
    if checkpoint.format != "zip":
        raise Unreadable(f"a {checkpoint.format} item where DCP writes a torch.save archive")
    key = (checkpoint.pickle, tuple(sorted(checkpoint.storage_sizes.items())))
    if seen is not None and key in seen:
        return seen[key]
    item = _interpret(checkpoint, allowlist)
    if seen is not None:
        seen[key] = item
    return item


def _interpret(checkpoint: Checkpoint, allowlist: Allowlist) -> TensorItem:
    interpreter = ShardTensorInterpreter(checkpoint.pickle, allowlist, checkpoint.storage_sizes)
    try:
        root, findings = interpreter.run()
    except (TruncatedPickle, MalformedPickle) as err:
        raise Unreadable(f"broken tensor pickle: {err}") from None
    dtype, shape = None, None
    args = dict(root.children).get("(args)") if isinstance(root, Node) else None
    if root.type_name in _TENSOR_TYPES and isinstance(args, Node) and args.items:
        storage, size = args.items[0], args.items[2] if len(args.items) > 2 else None
        storage_type = interpreter.storage_types.get(id(storage))
        warm_up()
        dtype = _DTYPES.get(storage_type or "")
        items = size.items if isinstance(size, Node) else None
        if items is not None and all(type(n) is int for n in items):
            shape = tuple(items)
    return TensorItem(dtype, shape, tuple(findings))


class PlainTensors:
    """A folder's plain tensor entries, each checked in one step.

    Most tensor entries of a DCP folder are alike: one chunk that is the whole tensor, its
    `storage_data` entry a `_StorageInfo` inside a shard file the audit has opened, no
    stream transforms, and an item proven from a template (`item_templates`) whose record
    declares the metadata's dtype and shape and nothing torch would refuse. The general
    check (`folder._FolderCheck`) finds nothing in such an entry, and changes nothing but
    its counts and the storage entries it used, after building chunk boxes, a `FileSlice`
    and a seen-items key for it. `take` takes such entries by exact types and values only
    (it flags nothing, and raises nothing the general check would not), so that every other
    entry, and every entry with a finding, goes the general way and gets its findings
    there; `tests/distributed/test_plain_tensors.py` holds the two against each other.

    One per folder audit. `files` (relative path -> (open file, descriptor, size)) holds
    the shard files the general check has opened and found; `answer` is its verdict on a
    tensor item torch's reader has opened (`items.tensor_item`, its memo included)."""

    def __init__(self, templates: ItemTemplates, answer: Callable[[Checkpoint], TensorItem]):
        import torch
        from torch.distributed.checkpoint.filesystem import _StorageInfo
        from torch.distributed.checkpoint.metadata import (
            ChunkStorageMetadata,
            TensorProperties,
            TensorStorageMetadata,
        )

        self._types = (
            TensorStorageMetadata,
            torch.Size,
            ChunkStorageMetadata,
            TensorProperties,
            torch.dtype,
            _StorageInfo,
        )
        self._templates, self._answer = templates, answer
        self.files: dict[str, tuple[Any, int | None, int]] = {}
        self._items: dict[int, tuple[Checkpoint, TensorItem | None]] = {}  # by id(checkpoint)
        self._dtypes: dict[Any, str] = {}  # torch.dtype -> its str
        # (size, offsets, sizes) -> the one chunk tiles the tensor; kept by value: a
        # torch.Size holds ints only, and chunk_problems reads nothing else
        self._whole: dict[Any, bool] = {}

    def take(
        self, pending: Iterator[tuple[str, Any]], entries: dict[Any, Any], used: set[Any]
    ) -> tuple[int, tuple[str, Any] | None]:
        """Take `state_dict_metadata` entries from `pending` while they are plain tensors,
        adding the `storage_data` key each uses to `used`: (how many, the first entry that
        is not one, for the general check; None at the end)."""
        tensor_type, size_type, chunk_type, properties_type, dtype_type, info_type = self._types
        whole, dtypes, prove = self._whole, self._dtypes, self._prove
        taken = 0
        for fqn, entry in pending:
            if type(entry) is not tensor_type:
                return taken, (fqn, entry)
            try:  # exact DCP dataclasses: a missing field is an AttributeError, nothing else
                chunks, size, properties = entry.chunks, entry.size, entry.properties
                if type(chunks) is not list or len(chunks) != 1 or type(size) is not size_type:
                    return taken, (fqn, entry)
                chunk = chunks[0]
                if type(chunk) is not chunk_type or type(properties) is not properties_type:
                    return taken, (fqn, entry)
                offsets, sizes, dtype = chunk.offsets, chunk.sizes, properties.dtype
            except AttributeError:
                return taken, (fqn, entry)
            if type(offsets) is not size_type or type(sizes) is not size_type:
                return taken, (fqn, entry)
            boxes = (size, offsets, sizes)
            is_whole = whole.get(boxes)
            if is_whole is None:
                is_whole = whole[boxes] = not chunk_problems(tuple(size), [boxes[1:]])
            if not is_whole or type(dtype) is not dtype_type:
                return taken, (fqn, entry)
            key = (fqn, offsets)  # equal to (fqn, tuple(offsets)), and of the same hash
            info = entries.get(key)
            item = prove(info) if type(info) is info_type else None
            if item is None or item.findings:
                return taken, (fqn, entry)
            dtype_name = dtypes.get(dtype)
            if dtype_name is None:
                dtype_name = dtypes[dtype] = str(dtype)
            if item.dtype is not None and item.dtype != dtype_name:
                return taken, (fqn, entry)
            if item.shape is not None and item.shape != sizes:
                return taken, (fqn, entry)
            used.add(key)
            taken += 1
        return taken, None

    def _prove(self, info: Any) -> TensorItem | None:
        """The verdict on the item a `_StorageInfo` points to, when it is in an open shard
        file, untransformed, and proven from a template; None otherwise."""
        try:
            relative, offset, length = info.relative_path, info.offset, info.length
            transforms = info.transform_descriptors  # (the class's None when not stored)
        except AttributeError:
            return None
        if type(relative) is not str or type(offset) is not int or type(length) is not int:
            return None
        file = self.files.get(relative)
        if file is None or transforms is not None:
            return None
        handle, fd, file_size = file
        if offset < 0 or length < 0 or offset + length > file_size:
            return None
        checkpoint = self._templates.prove(handle, fd, offset, length)
        if checkpoint is None:
            return None
        known = self._items.get(id(checkpoint))
        if known is None:
            try:
                item: TensorItem | None = self._answer(checkpoint)
            except Unreadable:  # the general check says so, where it is
                item = None
            known = self._items[id(checkpoint)] = (checkpoint, item)
        return known[1]
