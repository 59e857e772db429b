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
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pytest_ckpt.audit.allowlist import (
    APPEND_TARGETS,
    ORDERED_DICT,
    PARAMETER,
    SETITEM_TARGETS,
    TENSOR,
    Allowlist,
)
from pytest_ckpt.audit.nodes import (
    GLOBAL_TYPE,
    Finding,
    Node,
    attribute_label,
    collect_findings,
    key_label,
    value_is,
)
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
from pytest_ckpt.audit.tensor_records import (
    DeferredRecord,
    take_tensor_records,
)
from pytest_ckpt.fixes import fix_for_name

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


def _operand_text(value: Any) -> str:
    """A STACK_GLOBAL operand as text: strings as they are, anything else by its type (a
    node's repr would put a memory address in the report)."""
    if isinstance(value, Blob):
        return str(value.preview)
    if isinstance(value, Node):
        return f"<{value.type_name}>"
    return repr(value)


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


class PickleInterpreter:
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

    # ---- opcodes torch accepts -------------------------------------------------------------

    def _op_PROTO(self, op: Op) -> None:
        pass

    def _op_MARK(self, op: Op) -> None:
        self.metastack.append(self.stack)
        self.stack = []

    def _push(self, value: Any) -> None:
        self.stack.append(value)

    def _op_NONE(self, op: Op) -> None:
        self._push(None)

    def _op_NEWTRUE(self, op: Op) -> None:
        self._push(True)

    def _op_NEWFALSE(self, op: Op) -> None:
        self._push(False)

    def _op_BININT(self, op: Op) -> None:
        self._push(op.arg)

    _op_BININT1 = _op_BININT2 = _op_LONG1 = _op_BINFLOAT = _op_BINUNICODE = _op_BININT

    def _op_SHORT_BINSTRING(self, op: Op) -> None:
        """torch decodes these with torch.load's `encoding` (UTF-8 by default), strictly."""
        blob = op.arg
        try:
            self.data[blob.start : blob.start + blob.length].decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPickle(
                f"SHORT_BINSTRING at offset {op.offset} is not valid UTF-8: torch.load "
                "(with its default encoding) cannot read it"
            ) from None
        self._push(blob)

    def _op_EMPTY_TUPLE(self, op: Op) -> None:
        self._push(self._tuple([]))

    def _op_EMPTY_LIST(self, op: Op) -> None:
        self._push(Node("builtins.list"))

    def _op_EMPTY_DICT(self, op: Op) -> None:
        self._push(Node("builtins.dict"))

    def _op_EMPTY_SET(self, op: Op) -> None:
        self._push(Node("builtins.set"))

    def _op_TUPLE(self, op: Op) -> None:
        self._push(self._tuple(self._pop_mark(op)))

    def _op_TUPLE1(self, op: Op) -> None:
        self._push(self._tuple([self._pop(op)]))

    def _op_TUPLE2(self, op: Op) -> None:
        b, a = self._pop(op), self._pop(op)
        self._push(self._tuple([a, b]))

    def _op_TUPLE3(self, op: Op) -> None:
        c, b, a = self._pop(op), self._pop(op), self._pop(op)
        self._push(self._tuple([a, b, c]))

    def _op_BINPUT(self, op: Op) -> None:
        self.memo_put(op.arg, self._top(op))

    _op_LONG_BINPUT = _op_BINPUT

    def _op_BINGET(self, op: Op) -> None:
        self._push(self.memo_get(op.arg, op.offset))

    _op_LONG_BINGET = _op_BINGET

    def _op_GLOBAL(self, op: Op) -> None:
        module, name = op.arg
        dotted = self.allow.resolve(module, name)
        node = Node(GLOBAL_TYPE, name=dotted)
        if module in self.allow.blocked_modules:
            self._flag(
                node,
                self._global_finding(
                    dotted, op.offset, f"global {dotted}: module {module} is blocked by torch"
                ),
            )
        elif dotted not in self.allow.names:
            self._flag(
                node, self._global_finding(dotted, op.offset, f"unsupported global {dotted}")
            )
        self._push(node)

    def _take_over(self, result: Node, source: Any) -> None:
        """An object built from a refused global carries that global's finding."""
        if isinstance(source, Node) and source.type_name == GLOBAL_TYPE and source.findings:
            for finding in source.findings:
                self._flag(result, finding)
            source.findings = []

    def _op_REDUCE(self, op: Op) -> None:
        args = self._pop(op)
        func = self._top(op)
        if isinstance(func, Node) and func.type_name == GLOBAL_TYPE:
            result_type = self.allow.result_type(func.name or "")
            if func.name == "torch._tensor._rebuild_from_type_v2" and isinstance(args, Node):
                new_type = (args.items or [None, None])[1]
                if isinstance(new_type, Node) and new_type.type_name == GLOBAL_TYPE:
                    result_type = new_type.name or TENSOR
            result = Node(result_type if func.name in self.allow.names else func.name or "?")
            items = args.items if isinstance(args, Node) else None
            if items is not None and len(items) == 1 and not isinstance(items[0], Node):
                result.shape = "enum-like"
            self._take_over(result, func)
        else:
            result = Node("?")
            self._flag(
                result,
                self._operation_finding(
                    f"REDUCE at offset {op.offset} calls something that is not a global",
                    op.offset,
                    "store primitives and tensors only",
                ),
            )
        result.add_child("(args)", args)
        self.stack[-1] = result

    def _op_NEWOBJ(self, op: Op) -> None:
        args = self._pop(op)
        cls = self._pop(op)
        if isinstance(cls, Node) and cls.type_name == GLOBAL_TYPE:
            result = Node(cls.name or "?")
            if not cls.findings and cls.name not in self.allow.classes and cls.name != PARAMETER:
                self._flag(
                    result,
                    self._global_finding(
                        cls.name or "?",
                        op.offset,
                        f"NEWOBJ of {cls.name}: torch only creates nn.Parameter or "
                        "allow-listed classes",
                    ),
                )
            self._take_over(result, cls)
        else:
            result = Node("?")
            self._flag(
                result,
                self._operation_finding(
                    f"NEWOBJ at offset {op.offset} on something that is not a class",
                    op.offset,
                    "store primitives and tensors only",
                ),
            )
        result.add_child("(args)", args)
        self._push(result)

    def _op_BUILD(self, op: Op) -> None:
        state = self._pop(op)
        inst = self._top(op)
        if not isinstance(inst, Node):
            raise MalformedPickle(f"BUILD at offset {op.offset} on a primitive")
        buildable = {TENSOR, PARAMETER, ORDERED_DICT} | self.allow.classes
        if inst.type_name not in buildable and not inst.findings:
            self._flag(
                inst,
                self._operation_finding(
                    f"BUILD (setting object state) on {inst.type_name} at offset {op.offset}",
                    op.offset,
                    "store the object's state as a dict of primitives instead",
                ),
            )
        if isinstance(state, Node):
            inst.shape = "object-state"
        self._lift_state(inst, state)

    def _lift_state(self, inst: Node, state: Any) -> None:
        """Attach the state's entries to `inst` as attributes (`.stage`), so paths read well."""
        if not isinstance(state, Node):
            return
        if state.type_name == "builtins.dict":
            for label, child in state.children:
                inst.children.append((attribute_label(label), child))
        elif state.type_name == "builtins.tuple" and state.items is not None:
            for part in state.items:  # (dict_state, slot_state)
                if isinstance(part, Node) and part.type_name == "builtins.dict":
                    self._lift_state(inst, part)
        else:
            inst.children.append((".__setstate__", state))

    def _op_APPEND(self, op: Op) -> None:
        item = self._pop(op)
        self._append(op, [item])

    def _op_APPENDS(self, op: Op) -> None:
        items = self._pop_mark(op)
        self._append(op, items)

    def _container_target(self, op: Op, allowed: frozenset[str], what: str) -> Node:
        """The object APPEND(S)/SETITEM(S) writes into; flagged if torch would refuse it
        (and then allow-listing its class would not help: the operation itself is refused)."""
        target = self._top(op)
        if not isinstance(target, Node):
            raise MalformedPickle(f"{op.name} at offset {op.offset} onto a primitive")
        if target.type_name not in allowed:
            target.blocks_allowlisting = True
            if not target.findings:
                detail = f"{op.name} onto {target.type_name}: torch {what}"
                advice = fix_for_name(target.type_name).advice
                self._flag(target, self._operation_finding(detail, op.offset, advice))
        return target

    def _append(self, op: Op, items: list[Any]) -> None:
        target = self._container_target(op, APPEND_TARGETS, "can only extend lists")
        start = target.appended
        target.appended += len(items)
        for i, item in enumerate(items):
            target.add_child(start + i, item)

    def _op_SETITEM(self, op: Op) -> None:
        value, key = self._pop(op), self._pop(op)
        self._setitems(op, [key, value])

    def _op_SETITEMS(self, op: Op) -> None:
        self._setitems(op, self._pop_mark(op))

    def _setitems(self, op: Op, flat: list[Any]) -> None:
        target = self._container_target(
            op, SETITEM_TARGETS, "only sets items of dict, OrderedDict and Counter"
        )
        for i in range(0, len(flat) - 1, 2):
            key, value = flat[i], flat[i + 1]
            target.add_child(key_label(key), value)
            if isinstance(key, Node):
                target.children.append((".keys()", key))

    def _op_BINPERSID(self, op: Op) -> None:
        pid = self._pop(op)
        result = Node("torch.storage.TypedStorage")
        problem = self._persistent_problem(pid, op)
        if problem is not None:
            self._flag(
                result,
                Finding(
                    "bad-persistent-id",
                    problem,
                    None,
                    "re-save the checkpoint with torch.save",
                    False,
                    op.offset,
                ),
            )
        self._push(result)

    def _persistent_problem(self, pid: Any, op: Op) -> str | None:
        if isinstance(pid, int) and not isinstance(pid, bool):
            return f"integer persistent id {pid} at offset {op.offset}: not a storage reference"
        if not isinstance(pid, Node) or pid.type_name != "builtins.tuple":
            return f"persistent id at offset {op.offset} is not a tuple"
        items = pid.items
        if items is None or not items or not value_is(items[0], "storage"):
            return f"persistent id at offset {op.offset} is not a ('storage', ...) tuple"
        if self.storage_sizes is None:
            return None
        if len(items) != 5:
            return f"storage id at offset {op.offset} has {len(items)} fields, expected 5"
        _tag, storage_type, key, _location, numel = items
        if not (isinstance(storage_type, Node) and storage_type.type_name == GLOBAL_TYPE):
            return f"storage id at offset {op.offset} does not name a storage type"
        if not isinstance(key, Blob) or not key.complete or not isinstance(numel, int):
            return f"storage id at offset {op.offset} has a malformed key or size"
        self.storages += 1
        return self.storage_problem(str(key.preview), storage_type.name or "?", numel)

    # ---- opcodes torch refuses (flagged in run(); semantics kept to find more) --------------

    _op_INT = _op_LONG = _op_FLOAT = _op_STRING = _op_BINSTRING = _op_UNICODE = _op_BININT
    _op_SHORT_BINUNICODE = _op_BINUNICODE8 = _op_BINBYTES = _op_SHORT_BINBYTES = _op_BININT
    _op_BINBYTES8 = _op_BYTEARRAY8 = _op_LONG4 = _op_BININT

    def _op_FRAME(self, op: Op) -> None:
        pass

    def _op_POP(self, op: Op) -> None:
        self._pop(op)

    def _op_POP_MARK(self, op: Op) -> None:
        self._pop_mark(op)

    def _op_DUP(self, op: Op) -> None:
        self._push(self._top(op))

    def _op_PUT(self, op: Op) -> None:
        self.memo_put(int(op.arg), self._top(op))

    def _op_GET(self, op: Op) -> None:
        self._push(self.memo_get(int(op.arg), op.offset))

    def _op_MEMOIZE(self, op: Op) -> None:
        self.memo_put(len(self.memo), self._top(op))

    def _op_LIST(self, op: Op) -> None:
        node = Node("builtins.list")
        for i, item in enumerate(self._pop_mark(op)):
            node.add_child(i, item)
        self._push(node)

    def _op_DICT(self, op: Op) -> None:
        node = Node("builtins.dict")
        flat = self._pop_mark(op)
        for i in range(0, len(flat) - 1, 2):
            node.add_child(key_label(flat[i]), flat[i + 1])
        self._push(node)

    def _op_FROZENSET(self, op: Op) -> None:
        node = Node("builtins.frozenset")
        for item in self._pop_mark(op):
            node.add_child("[...]", item)
        self._push(node)

    def _op_ADDITEMS(self, op: Op) -> None:
        items = self._pop_mark(op)
        target = self._top(op)
        if isinstance(target, Node):
            for item in items:
                target.add_child("[...]", item)

    def _op_STACK_GLOBAL(self, op: Op) -> None:
        name, module = self._pop(op), self._pop(op)
        text = [_operand_text(v) for v in (module, name)]
        self._op_GLOBAL(Op("GLOBAL", (text[0], text[1]), op.offset))

    def _op_EXT1(self, op: Op) -> None:
        node = Node(GLOBAL_TYPE, name=f"<extension {op.arg}>")
        self._flag(
            node, self._global_finding(node.name or "", op.offset, f"extension code {op.arg}")
        )
        self._push(node)

    _op_EXT2 = _op_EXT4 = _op_EXT1

    def _op_NEWOBJ_EX(self, op: Op) -> None:
        kwargs = self._pop(op)
        self._op_NEWOBJ(op)
        self.stack[-1].add_child("(kwargs)", kwargs)

    def _op_INST(self, op: Op) -> None:
        args = self._pop_mark(op)
        module, name = op.arg
        self._op_GLOBAL(Op("GLOBAL", (module, name), op.offset))
        self._push(self._tuple(args))
        self._op_NEWOBJ(op)

    def _op_OBJ(self, op: Op) -> None:
        items = self._pop_mark(op)
        if not items:
            raise MalformedPickle(f"OBJ at offset {op.offset} without a class")
        self.stack.append(items[0])
        self._push(self._tuple(items[1:]))
        self._op_NEWOBJ(op)

    def _op_PERSID(self, op: Op) -> None:
        self._push(self._tuple([op.arg]))
        self._op_BINPERSID(op)

    def _op_NEXT_BUFFER(self, op: Op) -> None:
        self._push(Node("pickle.PickleBuffer"))

    def _op_READONLY_BUFFER(self, op: Op) -> None:
        self._top(op)
