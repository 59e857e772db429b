"""The auditor's fast path: one regex match (`record_grammar`) for each tensor (or Parameter)
torch.save writes.

A state dict is mostly the same ~30 opcodes per tensor (`_rebuild_tensor_v2` on a persistent
storage id, sizes, strides, requires_grad, an empty OrderedDict of hooks): ~30 us each in
Python, against a few for one compiled regex and the few memo values it reads.
The fast path only *recognises* records; it never decides anything the interpreter would
decide differently. A record is taken only when it is provably clean: every value it reads
from the memo is the allowed global or string torch expects, and its storage passes the
size check. Anything else, down to an unusual integer width, is left to the interpreter.
What the record writes to the memo besides the tensor is deferred: a `DeferredRecord` keeps
what the record read, and the first GET of one of its entries replays the record's bytes
through the interpreter (`verdict.PickleInterpreter.memo_get`): every value anyone can reach
is the interpreter's own.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from math import prod
from typing import Any, Protocol

from pytest_ckpt.audit.allowlist import ORDERED_DICT, PARAMETER, TENSOR, Allowlist
from pytest_ckpt.audit.nodes import GLOBAL_TYPE, Node, value_is
from pytest_ckpt.audit.opcodes import Blob, new_blob
from pytest_ckpt.audit.record_grammar import (
    BININT,
    LONG_PUTS,
    memo_index,
    record_at,
    shape_ints,
)

REBUILD_TENSOR_V2 = "torch._utils._rebuild_tensor_v2"
REBUILD_PARAMETER = "torch._utils._rebuild_parameter"


class Interpreter(Protocol):
    """What the fast path reads and writes of the auditor's interpreter
    (`verdict.PickleInterpreter`, which imports this module, not the other way round)."""

    data: bytes
    memo: dict[int, Any]
    stack: list[Any]
    allow: Allowlist
    storage_sizes: Mapping[str, int] | None
    storage_decls: dict[str, tuple[str, int]]  # key -> its first (storage type, numel)
    grad_tensors: dict[int, Node]  # plain tensors whose dtype can require grad (the gate's)
    built_from: dict[int, Any]  # flagged globals whose finding an object took over
    map_location: str | None
    clean_reads: dict[tuple[bytes, ...], tuple]  # validated reads, by the GETs' bytes
    guarded: set[int]  # memo entries clean_reads depends on
    records_taken: int
    storages: int


class DeferredRecord:
    """The memo entries a fast-path record wrote (all but the tensor's), built on first use.

    `reads` are the memo entries the record read, with the values they had then, so a replay
    sees exactly what the record saw even if the memo has changed since.
    """

    __slots__ = ("end", "reads", "start", "tensor")

    def __init__(self, start: int, end: int, reads: dict[int, Any], tensor: Node) -> None:
        self.start, self.end, self.reads, self.tensor = start, end, reads, tensor


def take_tensor_records(interp: Interpreter, pos: int, *, named: bool) -> int | None:
    """Apply the clean tensor (or Parameter) records that start at `pos`, one after another,
    to `interp` (each pushed, the record's other memo entries deferred) and return the offset
    after the last; None, having changed nothing, when the first is not one. `named`: each
    is a state dict entry, its name (a BINUNICODE and its PUT) pushed first. The loop keeps
    the interpreter's state in locals: a state dict is thousands of entries in a row."""
    data = interp.data
    if not _may_start(data, pos, named):
        return None  # most GETs and strings start no record: answered before the set-up
    memo, stack, guarded = interp.memo, interp.stack, interp.guarded
    clean_reads, sizes, size = interp.clean_reads, interp.storage_sizes, len(interp.data)
    grad_tensors, grad_storages = interp.grad_tensors, interp.allow.grad_storages
    taken, checked = 0, None
    while True:
        at = record_at(data, pos, size, named)
        if at is None:
            break
        record_start, name_index, name, groups, outer, end, key_start = at
        (
            rebuild_get, tag_get, type_get, new_key, key_put, key_get, location_get, numel_op,
            id_put, offset_op, size_shape, size_put, stride_shape, stride_put, grad_op,
            hooks_get, hooks_put, args_put, tensor_put,
        ) = groups  # fmt: skip
        signature = (rebuild_get, tag_get, type_get, location_get, hooks_get)
        if signature != checked:  # the previous record's reads hold: nothing ran since
            if (cached := _unflagged(interp, clean_reads.get(signature), signature)) is None:
                break
            shared_reads, _rebuild, _hooks, storage_type, element_size = cached
            checked = signature
        if grad_op == b"\x88" and storage_type.name not in grad_storages:
            break  # torch: only floating point and complex tensors can require grad
        reads, index = shared_reads, None
        if key_get is None:  # a new key, written in the record
            key = new_key[5:].decode("ascii")
        elif (found := _shared_storage_key(memo, key_get, name_index)) is not None:
            key, index = found
            reads = {**reads, index: memo[index]}
        else:
            break  # a deferred entry, not a key torch accepts, or the name just written
        if sizes is not None and not _storage_and_view_ok(
            interp, sizes, key, storage_type.name, element_size,
            (numel_op, offset_op, size_shape, stride_shape),
        ):  # fmt: skip
            break  # the interpreter reports it, on the storage node, with its path
        put_ops: tuple[bytes | None, ...] = (id_put, size_put, stride_put, hooks_put, args_put)
        key_index = None if key_put is None else memo_index(key_put)
        if outer:  # the tensor is the Parameter's data; the Parameter is what is pushed
            parameter_reads = _parameter_reads(interp, outer, storage_type.name)
            if parameter_reads is None:
                break
            reads = {**reads, **parameter_reads}
            put_ops, tensor_put = (*put_ops, tensor_put, outer[22], outer[23]), outer[24]
        tensor_index = None if tensor_put is None else memo_index(tensor_put)
        puts = _record_puts(put_ops, guarded, (name_index, key_index, tensor_index))
        if puts is None or (key_get is not None and index in puts):
            break  # overwrites what records read, or reads what it wrote: the interpreter's
        # Taken: from here on, only what the interpreter would have done.
        tensor = Node(PARAMETER if outer else TENSOR)
        record = DeferredRecord(record_start, end, reads, tensor)
        if name is not None:
            blob = new_blob(Blob, ("str", data[pos + 1], name, pos + 5))
            stack.append(blob)
            if name_index is not None:
                memo[name_index] = blob
        if key_index is not None:  # a value, cheap to make: shared storages stay on this path
            memo[key_index] = new_blob(Blob, ("str", len(key), key, key_start + 5))
        for index in puts:
            memo[index] = record
        if tensor_index is not None:
            memo[tensor_index] = tensor
        if storage_type.name in grad_storages and not outer:
            grad_tensors[id(tensor)] = tensor
        stack.append(tensor)
        taken += 1
        pos = end
    if not taken:
        return None
    interp.records_taken += taken
    interp.storages += taken if sizes is not None else 0
    return pos


def _unflagged(interp: Interpreter, cached: tuple | None, signature: tuple) -> tuple | None:
    """The validated reads of a record with these GETs (`_validated_reads`, cached), unless
    one of its globals was flagged since (BUILD or APPEND onto it): the interpreter's job."""
    cached = cached or _validated_reads(interp, signature)
    if cached is None or _flagged(interp.built_from, *cached[1:4]):
        return None
    return cached


def _may_start(data: bytes, pos: int, named: bool) -> bool:
    """Could a record start here? Its MARK MARK comes within 10 bytes of its first GET (one
    or two GETs, each 2 or 5 bytes); a named one's first GET follows the name and its PUT
    (0, 2 or 5 bytes). A superset: `record_at` decides."""
    if not named:
        return b"((" in data[pos + 2 : pos + 12]
    if data[pos + 2 : pos + 5] != b"\0\0\0":
        return False
    after_name = pos + 5 + data[pos + 1]
    return b"((" in data[after_name + 2 : after_name + 17]


def _validated_reads(interp: Interpreter, signature: tuple[bytes, ...]) -> tuple | None:
    """The memo values a record with these GETs reads, if they are the ones torch.save writes.

    Cached under `signature` until one of those memo entries is written again. For replays,
    the two globals the record calls are stood in for by clean copies: they were clean when
    the record ran, and a replay must not see (or take over) findings they gained since.
    """
    reads: dict[int, Any] = {}
    values = []
    for op in signature:
        index = memo_index(op)
        value = interp.memo.get(index, reads)  # `reads` stands for "never set"
        if value is reads or type(value) is DeferredRecord:
            return None  # the interpreter reports the bad GET, or builds the entry
        reads[index] = value
        values.append(value)
    rebuild, tag, storage_type, location, hooks = values
    if not (
        _is_clean_global(rebuild, REBUILD_TENSOR_V2, interp.built_from)
        and _is_clean_global(hooks, ORDERED_DICT, interp.built_from)
        and _is_clean_global(storage_type, None, interp.built_from)
        and value_is(tag, "storage")
        and loads_here(location, interp.map_location)
    ):
        return None
    interp.guarded.update(reads)
    reads[memo_index(signature[0])] = Node(GLOBAL_TYPE, name=REBUILD_TENSOR_V2)
    reads[memo_index(signature[4])] = Node(GLOBAL_TYPE, name=ORDERED_DICT)
    element_size = interp.allow.storage_sizes.get(storage_type.name)
    cached = (reads, rebuild, hooks, storage_type, element_size)
    interp.clean_reads[signature] = cached
    return cached


def _parameter_reads(interp: Interpreter, outer: tuple, storage_type: str) -> dict | None:
    """Stand-ins for what a Parameter record reads besides its tensor (`_rebuild_parameter`,
    the hooks' OrderedDict) if torch.save wrote them and torch accepts its requires_grad for
    the dtype; validated, guarded and cached like the tensor's reads (`_validated_reads`)."""
    if outer[20] == b"\x88" and storage_type not in interp.allow.grad_storages:
        return None  # torch: only floating point and complex tensors can require grad
    signature = (b"P", outer[0], outer[21])
    cached = interp.clean_reads.get(signature)
    if cached is None:
        at, hooks_at = memo_index(outer[0]), memo_index(outer[21])
        parameter, hooks = interp.memo.get(at), interp.memo.get(hooks_at)
        clean = _is_clean_global(parameter, REBUILD_PARAMETER, interp.built_from)
        if not (clean and _is_clean_global(hooks, ORDERED_DICT, interp.built_from)):
            return None
        interp.guarded.update((at, hooks_at))
        reads = {at: Node(GLOBAL_TYPE, name=REBUILD_PARAMETER)}
        reads[hooks_at] = Node(GLOBAL_TYPE, name=ORDERED_DICT)
        cached = interp.clean_reads[signature] = (reads, parameter, hooks)
    stand_ins, parameter, hooks = cached
    return None if _flagged(interp.built_from, parameter, hooks) else stand_ins


# (numel, offset, size, stride) opcodes -> the storage's numel, -1 for a view past it
_VIEWS: dict[tuple[bytes, bytes, bytes, bytes], int] = {}


def tensor_extent(size: list[int], stride: list[int]) -> int:
    """How many elements from the storage offset a tensor of this size and stride spans (0 when
    empty); -1 for what only torch's `set_` should judge: a rank mismatch, a negative size or
    stride, or one or a running product of sizes past int64 (torch's numel check refuses)."""
    products = [prod(size[: i + 1]) for i in range(len(size))]  # torch's, even before a 0
    if len(size) != len(stride) or any(not 0 <= v < 1 << 63 for v in size + stride + products):
        return -1
    return 0 if 0 in size else 1 + sum((n - 1) * step for n, step in zip(size, stride, strict=True))


def loads_here(location: Any, map_location: str | None) -> bool:
    """A storage location torch restores on this host without asking: "cpu", or any text
    when storages are mapped to the CPU (anything else is torch's to judge)."""
    if map_location in ("cpu", "meta"):
        return type(location) is Blob and location.kind == "str" and location.complete
    return map_location is None and value_is(location, "cpu")


def _is_clean_global(value: Any, name: str | None, built_from: dict[int, Any]) -> bool:
    """A GLOBAL node torch accepts (named `name`, when given)."""
    return (
        type(value) is Node
        and value.type_name == GLOBAL_TYPE
        and not _flagged(built_from, value)
        and (name is None or value.name == name)
    )


def _flagged(built_from: dict[int, Any], *nodes: Node) -> bool:
    """Has any of these globals been flagged (BUILD or SETITEMS onto it...)? Its finding
    sits on it, or, once an object was built from it, in the interpreter's `built_from`."""
    return any(node.findings or id(node) in built_from for node in nodes)


def _storage_and_view_ok(
    interp: Interpreter, sizes: Mapping[str, int], key: str, type_name: str,
    element_size: int | None, view: tuple[bytes, bytes, bytes, bytes],
) -> bool:  # fmt: skip
    """The checks torch makes on a zip checkpoint's storage (its record holds exactly numel
    x element size bytes; a shared one is seen with one type and size) and on the tensor's
    view (in bounds), for a record's (numel, offset, size, stride) opcodes."""
    numel = _VIEWS.get(view)
    if numel is None:
        if len(_VIEWS) > 1 << 16:  # bounded: a process may audit many files
            _VIEWS.clear()
        numel = _VIEWS[view] = _numel_if_in_bounds(view)
    if element_size is None or numel < 0 or numel * element_size != sizes.get(key, -1):
        return False
    declared = (type_name, numel)
    return interp.storage_decls.setdefault(key, declared) == declared  # else: a shared
    # storage seen with another type or size, torch's own call


def _numel_if_in_bounds(view: tuple[bytes, bytes, bytes, bytes]) -> int:
    """The storage's numel if the view (offset, size, stride) lies inside it, else -1."""
    numel_op, offset_op, size_shape, stride_shape = view
    numel = int.from_bytes(numel_op[1:], "little", signed=numel_op[0] == BININT)
    extent = tensor_extent(shape_ints(size_shape), shape_ints(stride_shape))
    offset = int.from_bytes(offset_op[1:], "little", signed=offset_op[0] == BININT)
    in_bounds = not (extent < 0 or offset < 0 or (extent and (offset + extent) > numel))
    return numel if in_bounds and numel >= 0 else -1


def _record_puts(
    put_ops: tuple[bytes | None, ...], guarded: set[int], other_writes: tuple[int | None, ...]
) -> list[int] | tuple[int, ...] | None:
    """The memo indices a record's PUTs write; None when a write overwrites a value that
    validated records read (the interpreter's PUT then resets the cache)."""
    puts: list[int] | tuple[int, ...]
    try:  # all in the 4-byte form (past the first 256 memo entries): one unpack. A missing
        # PUT (None) makes join raise TypeError, the fallback: cheaper than testing each.
        puts = LONG_PUTS[len(put_ops)](b"".join(put_ops))  # type: ignore[arg-type]
    except (TypeError, struct.error):
        puts = [memo_index(op) for op in put_ops if op is not None]
    if not guarded.isdisjoint(puts) or not guarded.isdisjoint(other_writes):
        return None
    return puts


def _shared_storage_key(
    memo: dict[int, Any], key_get: bytes, name_index: int | None
) -> tuple[str, int] | None:
    """A record's storage key read from the memo (a storage an earlier record wrote), with
    its index; None where the interpreter must decide (a deferred entry, not a key torch
    accepts, or the entry name just written, where the order of the reads matters)."""
    index = memo_index(key_get)
    shared = memo.get(index)
    if not (type(shared) is Blob and shared.kind == "str" and shared.complete):
        return None
    if index == name_index:
        return None
    return shared.preview, index
