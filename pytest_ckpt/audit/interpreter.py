"""Symbolic execution of a pickle, mirroring torch's weights_only unpickler check for check.

Nothing from the file is imported, called or constructed. Each object the pickle would build
is a `Node` that knows its type name and its children; primitives stay plain values (or a
`Blob` preview). Where torch's unpickler would raise, we record a `Finding` on the node
concerned and carry on, so one scan reports every problem. At STOP, findings get their path
from the root (`root['model']['seed_slots.r0c1._extra_state']['seed_state'].stage`).

Mirrored from `torch._weights_only_unpickler.Unpickler.load` (torch 2.10+):
- only its opcodes are accepted (protocol 2 as `torch.save` writes it); any other is a finding;
- GLOBAL must name an allowed global and not a blocked module;
- REDUCE must call an allowed global; NEWOBJ must create an allowed class (or Parameter);
- BUILD only on Tensor, Parameter, OrderedDict or an allowed class's instance;
- APPEND(S) only onto a list; SETITEM(S) only onto a dict, OrderedDict or Counter;
- BINPERSID ids must be ('storage', ...) tuples.

This module runs the loop; what each opcode does is in `opcode_semantics`, and whole tensor
records skip the loop through `tensor_records`.
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pytest_ckpt.audit.advice import fix_for_name
from pytest_ckpt.audit.allowlist import Allowlist
from pytest_ckpt.audit.nodes import Finding, Node, collect_findings
from pytest_ckpt.audit.opcode_semantics import AcceptedOpcodes, RefusedOpcodes
from pytest_ckpt.audit.opcodes import (
    PREVIEW,
    Blob,
    MalformedPickle,
    Op,
    TruncatedPickle,
    decode_at,
    new_blob,
    utf8_text,
)
from pytest_ckpt.audit.tensor_records import DeferredRecord, take_tensor_records

# The opcodes torch's weights_only unpickler implements; everything else it refuses.
TORCH_OPCODES = frozenset(
    {
        "GLOBAL", "NEWOBJ", "REDUCE", "BUILD", "APPEND", "APPENDS", "SETITEM", "SETITEMS",
        "MARK", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "NONE", "NEWFALSE", "NEWTRUE",
        "EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "BININT", "BININT1", "BININT2",
        "BINFLOAT", "BINUNICODE", "SHORT_BINSTRING", "BINPERSID", "BINGET", "LONG_BINGET",
        "BINPUT", "LONG_BINPUT", "LONG1", "PROTO", "STOP",
    }
)  # fmt: skip

# Opcodes run inline in PickleInterpreter.run: code -> argument width in bytes.
_BINPUT, _LONG_BINPUT, _BINGET, _LONG_BINGET = ord("q"), ord("r"), ord("h"), ord("j")
_BININT1, _BININT2, _BININT, _MARK = ord("K"), ord("M"), ord("J"), ord("(")
_NEWFALSE, _NEWTRUE, _NONE = 0x89, 0x88, ord("N")
_INLINE_WIDTH = {
    _BINPUT: 1, _LONG_BINPUT: 4, _BINGET: 1, _LONG_BINGET: 4, _BININT1: 1, _BININT2: 2,
    _BININT: 4, _MARK: 0, _NEWFALSE: 0, _NEWTRUE: 0, _NONE: 0,
}  # fmt: skip
_BINUNICODE = ord("X")
_KEEP_ITEMS = 8  # tuples this short keep their items (persistent ids, REDUCE args)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector, restoring its state after.

    An audit allocates a few small objects per opcode (and per zip member) and frees nothing
    until the end; with torch imported, each full collection walks hundreds of thousands of
    live objects, which made audits quadratic-looking (half the time on 4096 tensors) and
    their timing erratic. Reference counting still frees everything.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class PickleInterpreter(AcceptedOpcodes, RefusedOpcodes):
    """Run one pickle symbolically. `run()` returns the root and every finding."""

    def __init__(
        self,
        data: bytes,
        allowlist: Allowlist,
        *,
        start: int = 0,
        storage_sizes: Mapping[str, int] | None = None,
        fast_records: bool = True,
    ) -> None:
        """`storage_sizes` (archive member sizes by storage key) turns on the storage checks
        of a zip checkpoint; `fast_records` lets whole tensor records skip the opcode loop."""
        self.data = data
        self.allow = allowlist
        self.start = start
        self.storage_sizes = storage_sizes
        self.fast_records = fast_records
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.loose: list[Finding] = []  # findings with no node to sit on
        self.nodes_with_findings: list[Node] = []
        self.storages = 0  # storage references seen
        self.records_taken = 0  # tensor records the fast path took
        self.clean_reads: dict[tuple[bytes, ...], tuple] = {}  # see tensor_records
        self.guarded: set[int] = set()  # memo entries clean_reads depends on
        self.end = start

    # ---- findings ------------------------------------------------------------------------

    def _flag(self, node: Node | None, finding: Finding) -> None:
        if node is None:
            self.loose.append(finding)
            return
        if not node.findings:
            self.nodes_with_findings.append(node)
        node.findings.append(finding)

    def _global_finding(self, name: str, offset: int, detail: str) -> Finding:
        fix = fix_for_name(name)
        return Finding("unsupported-global", detail, name, fix.advice, fix.allowlist_helps, offset)

    def _operation_finding(self, detail: str, offset: int, fix: str) -> Finding:
        return Finding("unsupported-operation", detail, None, fix, False, offset)

    # ---- stack ---------------------------------------------------------------------------

    def _pop(self, op: Op) -> Any:
        if not self.stack:
            raise MalformedPickle(f"{op.name} at offset {op.offset} pops an empty stack")
        return self.stack.pop()

    def _top(self, op: Op) -> Any:
        if not self.stack:
            raise MalformedPickle(f"{op.name} at offset {op.offset} needs a value on the stack")
        return self.stack[-1]

    def _pop_mark(self, op: Op) -> list[Any]:
        if not self.metastack:
            raise MalformedPickle(f"{op.name} at offset {op.offset} has no matching MARK")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _push(self, value: Any) -> None:
        self.stack.append(value)

    def _tuple(self, items: list[Any]) -> Node:
        node = Node("builtins.tuple", items=list(items) if len(items) <= _KEEP_ITEMS else None)
        node.children = [(i, item) for i, item in enumerate(items) if type(item) is Node]
        return node

    # ---- run -----------------------------------------------------------------------------

    def run(self) -> tuple[Any, list[Finding]]:
        """Execute to STOP (with the cyclic garbage collector paused: see `gc_paused`)."""
        with gc_paused():
            return self._run()

    def _run(self) -> tuple[Any, list[Finding]]:
        """The opcodes a state dict is made of are handled inline on the raw bytes (they are
        most of the file and need no checks beyond bounds); the rest are decoded and
        dispatched to their `_op_*` handlers."""
        data, size = self.data, len(self.data)
        unpack_from = struct.unpack_from
        refused: set[str] = set()
        handlers = {name: getattr(self, name) for name in dir(self) if name.startswith("_op_")}
        fast_records = self.fast_records
        pos = self.start
        while True:
            if pos >= size:
                raise TruncatedPickle(f"pickle ends at offset {pos} without STOP")
            code = data[pos]
            width = _INLINE_WIDTH.get(code)
            if width is not None:
                if pos + 1 + width > size:
                    raise TruncatedPickle(f"opcode at offset {pos} runs past the end")
                stack = self.stack
                if code in (_BINPUT, _LONG_BINPUT):
                    if not stack:
                        raise MalformedPickle(f"PUT at offset {pos} with an empty stack")
                    index = (
                        data[pos + 1] if code == _BINPUT else unpack_from("<I", data, pos + 1)[0]
                    )
                    self.memo_put(index, stack[-1])
                elif code in (_BINGET, _LONG_BINGET):
                    if fast_records:  # a tensor record starts with the GET of its rebuild
                        after = take_tensor_records(self, pos, named=False)
                        if after is not None:
                            pos = after
                            continue
                    index = (
                        data[pos + 1] if code == _BINGET else unpack_from("<I", data, pos + 1)[0]
                    )
                    stack.append(self.memo_get(index, pos))
                elif code == _BININT1:
                    stack.append(data[pos + 1])
                elif code == _BININT2:
                    stack.append(unpack_from("<H", data, pos + 1)[0])
                elif code == _BININT:
                    stack.append(unpack_from("<i", data, pos + 1)[0])
                elif code == _MARK:
                    self.metastack.append(stack)
                    self.stack = []
                elif code == _NEWFALSE:
                    stack.append(False)
                elif code == _NEWTRUE:
                    stack.append(True)
                elif code == _NONE:
                    stack.append(None)
                pos += 1 + width
                continue
            if code == _BINUNICODE and fast_records:  # the name of a state dict entry
                after = take_tensor_records(self, pos, named=True)
                if after is not None:
                    pos = after
                    continue
            if code == _BINUNICODE and pos + 5 <= size:  # short strings: every dict key
                length = unpack_from("<I", data, pos + 1)[0]
                if length <= PREVIEW and pos + 5 + length <= size:
                    text = utf8_text(data, pos + 5, length)
                    self.stack.append(new_blob(Blob, ("str", length, text, pos + 5)))
                    pos += 5 + length
                    continue
            op, pos = decode_at(data, pos)
            if op.name not in TORCH_OPCODES and op.name not in refused:
                refused.add(op.name)  # one finding per opcode name, not one per use
                self.loose.append(
                    Finding(
                        "unsupported-opcode",
                        f"opcode {op.name} at offset {op.offset} is not accepted by torch's "
                        "weights_only unpickler (it reads pickle protocol 2, as torch.save "
                        "writes it)",
                        None,
                        "re-save the checkpoint with torch.save (default pickle protocol)",
                        False,
                        op.offset,
                    )
                )
            if op.name == "STOP":
                self.end = pos
                root = self._pop(op)
                return root, collect_findings(root, self.loose, self.nodes_with_findings)
            handler = handlers.get("_op_" + op.name)
            if handler is None:
                raise MalformedPickle(f"no semantics for opcode {op.name}")
            handler(op)

    # ---- memo ----------------------------------------------------------------------------

    def memo_put(self, index: int, value: Any) -> None:
        """Every PUT goes through here: a write to an entry validated records read (see
        tensor_records) makes the fast path validate them again."""
        if index in self.guarded:
            self.forget_clean_reads()
        self.memo[index] = value

    def forget_clean_reads(self) -> None:
        """A memo entry tensor records read is written again: validate them afresh."""
        self.clean_reads.clear()
        self.guarded.clear()

    def memo_get(self, index: int, offset: int) -> Any:
        """The memo entry GET reads; a fast-path record's entries are built on first read."""
        if index not in self.memo:
            raise MalformedPickle(f"GET at offset {offset} reads memo {index}, never set")
        value = self.memo[index]
        if type(value) is DeferredRecord:
            self._materialize(value)
            value = self.memo[index]
        return value

    def _materialize(self, record: DeferredRecord) -> None:
        """Replay a fast-path tensor record through the opcode loop, from the memo values it
        read, and put what it built where the record's memo entries still point."""
        replay = PickleInterpreter(
            self.data[record.start : record.end] + b".",
            self.allow,
            storage_sizes=self.storage_sizes,
            fast_records=False,
        )
        replay.memo.update(record.reads)
        tensor, findings = replay._run()
        if findings:  # take_tensor_record takes clean records only
            raise AssertionError(f"tensor record at offset {record.start} was not clean")
        record.tensor.children[:0] = tensor.children  # before anything added since
        for index, value in replay.memo.items():
            if self.memo.get(index) is record:
                self.memo[index] = value

    def storage_problem(self, key: str, type_name: str, numel: int) -> str | None:
        """Why torch would refuse this storage reference of a zip checkpoint, if it would."""
        sizes = self.storage_sizes
        if sizes is None:
            return None
        size = sizes.get(key)
        if size is None:
            return f"storage {key!r} is not in the archive (data/{key} missing)"
        element = self.allow.storage_sizes.get(type_name)
        if element is None:
            return f"storage {key!r} has unknown storage type {type_name}"
        if numel < 0 or numel * element > size:
            return (
                f"storage {key!r} declares {numel} x {element} bytes but the archive holds {size}"
            )
        return None
