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
import re
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_ckpt.audit.allowlist import (
    APPEND_TARGETS,
    ORDERED_DICT,
    PARAMETER,
    SETITEM_TARGETS,
    TENSOR,
    Allowlist,
)
from pytest_ckpt.audit.opcodes import Blob, MalformedPickle, Op, TruncatedPickle, decode_at
from pytest_ckpt.fixes import ENUM_FIX, GENERIC_KIND, OBJECT_STATE_FIX, Fix, fix_for_name

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

GLOBAL_TYPE = "<global>"

# Opcodes run inline in PickleInterpreter.run: code -> argument width in bytes.
_BINPUT, _LONG_BINPUT, _BINGET, _LONG_BINGET = ord("q"), ord("r"), ord("h"), ord("j")
_BININT1, _BININT2, _BININT, _MARK = ord("K"), ord("M"), ord("J"), ord("(")
_NEWFALSE, _NEWTRUE, _NONE = 0x89, 0x88, ord("N")
_INLINE_WIDTH = {
    _BINPUT: 1, _LONG_BINPUT: 4, _BINGET: 1, _LONG_BINGET: 4, _BININT1: 1, _BININT2: 2,
    _BININT: 4, _MARK: 0, _NEWFALSE: 0, _NEWTRUE: 0, _NONE: 0,
}  # fmt: skip
_IDENTIFIER_KEY = re.compile(r"\['([A-Za-z_][A-Za-z0-9_]*)'\]")
_KEEP_ITEMS = 8  # tuples this short keep their items (persistent ids, REDUCE args)
_MAX_PATH_PARTS = 40  # longer paths are shown with the middle elided


@dataclass(slots=True)
class Finding:
    kind: str
    detail: str
    global_name: str | None
    fix: str
    allowlist_helps: bool
    offset: int
    path: str = ""


class Node:
    """An object the pickle would build. `items` is kept only for short tuples.

    A plain slotted class (not a dataclass): a state dict makes several per tensor.
    """

    __slots__ = (
        "appended", "blocks_allowlisting", "children", "findings", "items", "name", "shape",
        "type_name",
    )  # fmt: skip

    def __init__(self, type_name: str, name: str | None = None, items: list[Any] | None = None):
        self.type_name = type_name
        self.name = name  # for GLOBAL nodes: the dotted name
        self.children: list[tuple[str | int, Node]] = []  # int labels are list/tuple indices
        self.appended = 0  # items appended so far (list indices)
        self.items = items
        self.findings: list[Finding] = []
        self.blocks_allowlisting = False
        self.shape = ""  # "enum-like" (class called with one primitive) or "object-state"

    def add_child(self, label: str | int, value: Any) -> None:
        if isinstance(value, Node):
            self.children.append((label, value))


@dataclass(slots=True, frozen=True)
class StorageRef:
    """A tensor storage the pickle points at (from a BINPERSID)."""

    key: str
    type_name: str
    numel: int
    offset: int


PersistentCheck = Callable[[StorageRef], "str | None"]


def _label(key: Any) -> str:
    if isinstance(key, Blob):
        text = key.preview if key.complete else f"{key.preview}..."
        return f"[{text!r}]"
    if isinstance(key, Node):
        return f"[<{key.type_name}>]"
    return f"[{key!r}]"


def _attribute_label(label: str) -> str:
    match = _IDENTIFIER_KEY.fullmatch(label)
    return f".{match.group(1)}" if match else f".__dict__{label}"


def _path_to(node: Node, parents: dict[int, tuple[Node | None, str | int]]) -> str | None:
    if id(node) not in parents:
        return None
    labels: list[str] = []
    current: Node | None = node
    while current is not None:
        parent, label = parents[id(current)]
        labels.append(f"[{label}]" if isinstance(label, int) else label)
        current = parent
    labels.reverse()
    if len(labels) > _MAX_PATH_PARTS:
        hidden = len(labels) - _MAX_PATH_PARTS
        labels = [*labels[:5], f"...({hidden} levels)...", *labels[5 - _MAX_PATH_PARTS :]]
    return "".join(labels)


def _refine_fix(finding: Finding, node: Node) -> None:
    """A name alone says little about an unknown class; how the pickle built it says more."""
    if (
        finding.kind != "unsupported-global"
        or fix_for_name(finding.global_name or "").kind != GENERIC_KIND
    ):
        return
    fix: Fix | None = {"enum-like": ENUM_FIX, "object-state": OBJECT_STATE_FIX}.get(node.shape)
    if fix is not None:
        hint = "looks like an Enum member" if fix is ENUM_FIX else "an object with attributes"
        finding.fix = f"{fix.advice} ({hint})"
        finding.allowlist_helps = fix.allowlist_helps


def _value_is(value: Any, text: str) -> bool:
    return isinstance(value, Blob) and value.complete and value.preview in (text, text.encode())


class PickleInterpreter:
    """Run one pickle symbolically. `run()` returns the root and every finding."""

    def __init__(
        self,
        data: bytes,
        allowlist: Allowlist,
        *,
        start: int = 0,
        check_storage: PersistentCheck | None = None,
    ) -> None:
        self.data = data
        self.allow = allowlist
        self.start = start
        self.check_storage = check_storage
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.loose: list[Finding] = []  # findings with no node to sit on
        self.nodes_with_findings: list[Node] = []
        self.storages: list[StorageRef] = []
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
        """Execute to STOP, with the cyclic garbage collector paused.

        The run allocates a few small objects per opcode and frees nothing until the end;
        with torch imported, each full collection walks hundreds of thousands of live
        objects, which made the run quadratic-looking (half the time on 4096 tensors).
        Reference counting still frees everything; the collector's state is restored.
        """
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if was_enabled:
                gc.enable()

    def _run(self) -> tuple[Any, list[Finding]]:
        """The opcodes a state dict is made of are handled inline on the raw bytes (they are
        most of the file and need no checks beyond bounds); the rest are decoded and
        dispatched to their `_op_*` handlers."""
        data, size, memo = self.data, len(self.data), self.memo
        unpack_from = struct.unpack_from
        refused: set[str] = set()
        handlers = {name: getattr(self, name) for name in dir(self) if name.startswith("_op_")}
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
                    memo[index] = stack[-1]
                elif code in (_BINGET, _LONG_BINGET):
                    index = (
                        data[pos + 1] if code == _BINGET else unpack_from("<I", data, pos + 1)[0]
                    )
                    if index not in memo:
                        raise MalformedPickle(f"GET at offset {pos} reads memo {index}, never set")
                    stack.append(memo[index])
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
                return root, self._collect(root)
            handler = handlers.get("_op_" + op.name)
            if handler is None:
                raise MalformedPickle(f"no semantics for opcode {op.name}")
            handler(op)

    def _collect(self, root: Any) -> list[Finding]:
        """Give each finding the path of the first (shortest) route from the root to its node.

        The walk records parent links only; a path string is built just for the nodes that
        carry findings, so a deeply nested file costs linear time.
        """
        parents: dict[int, tuple[Node | None, str | int]] = {}
        if isinstance(root, Node) and self.nodes_with_findings:
            parents[id(root)] = (None, "root")
            queue: deque[Node] = deque([root])
            while queue:
                node = queue.popleft()
                for label, child in node.children:
                    if id(child) not in parents:
                        parents[id(child)] = (node, label)
                        queue.append(child)
        findings = []
        for finding in self.loose:
            finding.path = finding.path or "root"
            findings.append(finding)
        for node in self.nodes_with_findings:
            path = _path_to(node, parents)
            for finding in node.findings:
                finding.path = path or f"<discarded object built at offset {finding.offset}>"
                _refine_fix(finding, node)
                if node.blocks_allowlisting:
                    finding.allowlist_helps = False
                findings.append(finding)
        return findings

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
    _op_SHORT_BINSTRING = _op_BININT

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
        self.memo[op.arg] = self._top(op)

    _op_LONG_BINPUT = _op_BINPUT

    def _op_BINGET(self, op: Op) -> None:
        if op.arg not in self.memo:
            raise MalformedPickle(f"{op.name} at offset {op.offset} reads memo {op.arg}, never set")
        self._push(self.memo[op.arg])

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
                inst.children.append((_attribute_label(label), child))
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
            target.add_child(_label(key), value)
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
        if items is None or not items or not _value_is(items[0], "storage"):
            return f"persistent id at offset {op.offset} is not a ('storage', ...) tuple"
        if self.check_storage is None:
            return None
        if len(items) != 5:
            return f"storage id at offset {op.offset} has {len(items)} fields, expected 5"
        _tag, storage_type, key, _location, numel = items
        if not (isinstance(storage_type, Node) and storage_type.type_name == GLOBAL_TYPE):
            return f"storage id at offset {op.offset} does not name a storage type"
        if not isinstance(key, Blob) or not key.complete or not isinstance(numel, int):
            return f"storage id at offset {op.offset} has a malformed key or size"
        ref = StorageRef(str(key.preview), storage_type.name or "?", numel, op.offset)
        self.storages.append(ref)
        return self.check_storage(ref)

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
        self.memo[int(op.arg)] = self._top(op)

    def _op_GET(self, op: Op) -> None:
        index = int(op.arg)
        if index not in self.memo:
            raise MalformedPickle(f"GET at offset {op.offset} reads memo {index}, never set")
        self._push(self.memo[index])

    def _op_MEMOIZE(self, op: Op) -> None:
        self.memo[len(self.memo)] = self._top(op)

    def _op_LIST(self, op: Op) -> None:
        node = Node("builtins.list")
        for i, item in enumerate(self._pop_mark(op)):
            node.add_child(i, item)
        self._push(node)

    def _op_DICT(self, op: Op) -> None:
        node = Node("builtins.dict")
        flat = self._pop_mark(op)
        for i in range(0, len(flat) - 1, 2):
            node.add_child(_label(flat[i]), flat[i + 1])
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
        text = [v.preview if isinstance(v, Blob) else str(v) for v in (module, name)]
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
