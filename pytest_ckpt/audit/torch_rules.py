"""torch's weights_only rules, as one class in torch's own opcode order.

Read it beside the installed `torch/_weights_only_unpickler.py` (`Unpickler.load`, torch
2.10+): each handler below is its branch, in its order, with its checks. Where torch raises,
we record a `Finding` on the node concerned and carry on, so one scan reports every problem;
nothing from the file is imported, called or constructed. Each object the pickle would
build is a `Node` that knows its type name and its children; primitives stay plain values
(or a `Blob` preview).

- only torch's opcodes are accepted (`TORCH_OPCODES`, protocol 2 as `torch.save` writes it);
- GLOBAL must name an allowed global and not a blocked module;
- REDUCE must call an allowed global; NEWOBJ must create an allowed class (or Parameter);
- BUILD only on Tensor, Parameter, OrderedDict or an allowed class's instance;
- APPEND(S) only onto a list; SETITEM(S) only onto a dict, OrderedDict or Counter;
- BINPERSID ids must be ('storage', ...) tuples of a storage the archive holds.

The loop, stack and memo are `machine.PickleMachine`'s (MARK, NONE, NEWFALSE, NEWTRUE, the
numbers and PROTO mean the same in every semantics, so they live there). Stage two's gate
(`stage2_gate.OracleGate`) is called explicitly where it watches. What the auditor does with
the opcodes torch refuses is `verdict.PickleInterpreter`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pytest_ckpt.audit.advice import OBJECT_STATE_FIX, fix_for_name
from pytest_ckpt.audit.allowlist import (
    APPEND_TARGETS,
    ORDERED_DICT,
    PARAMETER,
    SETITEM_TARGETS,
    TENSOR,
    Allowlist,
)
from pytest_ckpt.audit.global_kinds import advisable, display
from pytest_ckpt.audit.machine import PickleMachine
from pytest_ckpt.audit.nodes import (
    GLOBAL_TYPE,
    MAX_FINDINGS,
    Finding,
    Node,
    key_label,
    lift_state,
    one_primitive,
    tuple_node,
    value_is,
)
from pytest_ckpt.audit.numpy_pickles import reduce_result
from pytest_ckpt.audit.opcodes import MalformedPickle, Op
from pytest_ckpt.audit.stage2_gate import OracleGate
from pytest_ckpt.audit.storage_keys import judged_by_gate, storage_key, storage_problem

# The opcodes torch's weights_only unpickler implements, in its order; it refuses any other.
TORCH_OPCODES = frozenset(
    (
        "GLOBAL", "NEWOBJ", "REDUCE", "BUILD", "APPEND", "APPENDS", "SETITEM", "SETITEMS",
        "MARK", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "NONE", "NEWFALSE", "NEWTRUE",
        "EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "BININT", "BININT1", "BININT2",
        "BINFLOAT", "BINUNICODE", "SHORT_BINSTRING", "BINPERSID", "BINGET", "LONG_BINGET",
        "BINPUT", "LONG_BINPUT", "LONG1", "PROTO", "STOP",
    )
)  # fmt: skip

_SETS = ("builtins.set", "builtins.frozenset")


def global_finding(name: str, offset: int, detail: str) -> Finding:
    fix = fix_for_name(name)
    return Finding("unsupported-global", detail, name, fix.advice, False, offset, fix_kind=fix.kind)


def operation_finding(detail: str, offset: int, fix: str, kind: str = "") -> Finding:
    return Finding("unsupported-operation", detail, None, fix, False, offset, fix_kind=kind)


_TUPLE_SIZES = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


class TorchRules(PickleMachine):
    """What each opcode torch accepts builds, symbolically, and where torch refuses it."""

    ACCEPTED: ClassVar[frozenset[str] | None] = TORCH_OPCODES

    def __init__(
        self,
        data: bytes,
        allowlist: Allowlist,
        *,
        start: int = 0,
        storage_sizes: Mapping[str, int] | None = None,
        map_location: str | None = None,
    ) -> None:
        """`storage_sizes` (archive member sizes by storage key) turns on the storage checks
        of a zip checkpoint; `map_location` is torch.load's (None: storages must load where
        they were saved)."""
        super().__init__(data, start=start)
        self.allow = allowlist
        self.storage_sizes = storage_sizes
        self.map_location = map_location
        self.storage_decls: dict[Any, tuple[str, int]] = {}  # key -> first (type, numel)
        self.gate = OracleGate(allowlist, storage_sizes, self.storage_decls, map_location)
        self.grad_tensors = self.gate.grad_tensors  # the fast path's tensors go in too
        self.loose: list[Finding] = []  # findings with no node to sit on
        self.nodes_with_findings: list[Node] = []
        # id(refused GLOBAL node) -> (that node, the findings its first object took): what
        # each later object built from it copies (`_take_over`)
        self.built_from: dict[int, tuple[Node, Sequence[Finding]]] = {}
        self.storages = 0  # storage references seen
        self.flags = self.findings_omitted = 0
        # what each kept finding asks for: past the cap, a finding asking for something new
        # is still kept (one per key), so every global is named and the exact list complete
        self.kept_keys: set[tuple] = set()
        self.keys_omitted = False  # past MAX_FINDINGS keys too: the list cannot be vouched for

    # ---- findings ------------------------------------------------------------------------

    def _flag(self, node: Node | None, finding: Finding) -> None:
        self.flags += 1
        key = (finding.kind, finding.global_name, finding.needs)
        if self.flags > MAX_FINDINGS and key in self.kept_keys:  # a repeat: counted only
            self.findings_omitted += 1
            return
        if len(self.kept_keys) >= MAX_FINDINGS and key not in self.kept_keys:
            self.findings_omitted += 1  # reports stay bounded (nodes.py): 2x the cap at most
            self.keys_omitted = True
            return
        self.kept_keys.add(key)
        if node is None:
            self.loose.append(finding)
            return
        if not node.findings:
            self.nodes_with_findings.append(node)
        node.findings = [*node.findings, finding]  # (a node holds a few: one per kind)

    def _take_over(self, result: Node, source: Any, offset: int) -> None:
        """Each object built from a refused global carries that global's finding: the
        first takes the GLOBAL's own, every later one (the global memoized, then BINGET and
        REDUCE/NEWOBJ again: a second Enum member, a second datetime) a copy of it, at the
        offset that builds it. Each object is its own finding, counted against the cap."""
        if not isinstance(source, Node) or source.type_name != GLOBAL_TYPE:
            return
        if source.findings:
            if not result.findings:  # moved, not flagged again: the cap counts each once
                self.nodes_with_findings.append(result)
            result.findings = [*result.findings, *source.findings]
            self.built_from[id(source)] = (source, source.findings)
            source.findings = ()
            return
        first = self.built_from.get(id(source))
        if first is not None and first[0] is source:
            for finding in first[1]:
                self._flag(result, finding.copy_at(offset))

    # ---- torch's opcodes, in torch's order -----------------------------------------------

    def _op_GLOBAL(self, op: Op) -> None:
        module, name = op.arg
        dotted = self.allow.resolve(module, name)
        node = Node(GLOBAL_TYPE, name=dotted)
        shown = display(dotted)  # a name is the file's data: long ones are cut for reports
        if self.allow.blocked(module, name):
            detail = f"global {shown}: module {display(module)} is blocked by torch"
            self._flag(node, global_finding(shown, op.offset, detail))
        elif dotted not in self.allow.names:
            self._flag(node, global_finding(shown, op.offset, f"unsupported global {shown}"))
        self._push(node)
        self.gate.global_named(dotted)

    def _op_NEWOBJ(self, op: Op) -> None:
        if len(self.stack) >= 2:
            self.gate.call(self.stack[-2], self.stack[-1], op.offset, reduce=False)
        args = self._pop(op)
        cls = self._pop(op)
        if isinstance(cls, Node) and cls.type_name == GLOBAL_TYPE:
            result = Node(cls.name or "?")
            if isinstance(args, Node) and one_primitive(args):  # float/int subclasses
                arg = args.items[0]  # type: ignore[index]
                result.shape = {float: "float-like", int: "int-like"}.get(type(arg), "")
            refused = cls.findings or id(cls) in self.built_from
            if not refused and cls.name not in self.allow.classes and cls.name != PARAMETER:
                shown = display(cls.name or "?")
                detail = (
                    f"NEWOBJ of {shown}: torch only creates nn.Parameter or allow-listed classes"
                )
                self._flag(result, global_finding(shown, op.offset, detail))
            self._take_over(result, cls, op.offset)
        else:
            result = Node("?")
            detail = f"NEWOBJ at offset {op.offset} on something that is not a class"
            advice = "store primitives and tensors only"
            self._flag(result, operation_finding(detail, op.offset, advice))
        result.add_child("(args)", args)
        self._push(result)

    def _op_REDUCE(self, op: Op) -> None:
        if len(self.stack) >= 2:
            self.gate.call(self.stack[-2], self.stack[-1], op.offset, reduce=True)
        args = self._pop(op)
        func = self._top(op)
        items = (args.items if isinstance(args, Node) else None) or [None, None]
        if isinstance(func, Node) and func.type_name == GLOBAL_TYPE:
            result_type = self.allow.result_type(func.name or "")
            if func.name == "torch._tensor._rebuild_from_type_v2":
                new_type = items[1] if len(items) > 1 else None  # a 1-tuple: torch's TypeError
                if isinstance(new_type, Node) and new_type.type_name == GLOBAL_TYPE:
                    result_type = new_type.name or TENSOR
            result_type = reduce_result(func.name or "", items[0]) or result_type
            result = Node(result_type if func.name in self.allow.names else func.name or "?")
            if isinstance(args, Node) and one_primitive(args):
                result.shape = "enum-like"
            self._take_over(result, func, op.offset)
        else:
            result = Node("?")
            detail = f"REDUCE at offset {op.offset} calls something that is not a global"
            advice = "store primitives and tensors only"
            self._flag(result, operation_finding(detail, op.offset, advice))
        if result.type_name in _SETS and isinstance(items[0], Node):  # set([...]): its items
            result.children = [("[...]", child) for _i, child in items[0].children]
        else:
            result.add_child("(args)", args)
        self.stack[-1] = result
        self.gate.made(result)

    def _op_BUILD(self, op: Op) -> None:
        if len(self.stack) >= 2:
            self.gate.build(self.stack[-2], self.stack[-1])
        state = self._pop(op)
        inst = self._top(op)
        if not isinstance(inst, Node):
            raise MalformedPickle(f"BUILD at offset {op.offset} on a primitive")
        buildable = {TENSOR, PARAMETER, ORDERED_DICT} | self.allow.classes
        if inst.type_name not in buildable and not inst.findings:
            finding = operation_finding(
                f"BUILD (setting object state) on {display(inst.type_name)} at offset {op.offset}",
                op.offset,
                "store the object's state as a dict of primitives instead",
                OBJECT_STATE_FIX.kind,
            )
            finding.needs = (inst.type_name,) if advisable(inst.type_name) else ()
            self._flag(inst, finding)
        if isinstance(state, Node):
            inst.shape = "object-state"
        lift_state(inst, state)

    def _op_APPEND(self, op: Op) -> None:
        self._append(op, [self._pop(op)])

    def _op_APPENDS(self, op: Op) -> None:
        self._append(op, self._pop_mark(op))

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
                fix = fix_for_name(target.type_name)
                self._flag(target, operation_finding(detail, op.offset, fix.advice, fix.kind))
        return target

    def _append(self, op: Op, items: list[Any]) -> None:
        target = self._container_target(op, APPEND_TARGETS, "can only extend lists")
        start = target.appended
        target.appended += len(items)
        for i, item in enumerate(items):
            target.add_child(start + i, item)

    def _op_SETITEM(self, op: Op) -> None:
        self.gate.items_set([*self.stack[-2:-1], None])
        value, key = self._pop(op), self._pop(op)
        self._setitems(op, [key, value])

    def _op_SETITEMS(self, op: Op) -> None:
        self.gate.items_set(self.stack)
        self._setitems(op, self._pop_mark(op))

    def _setitems(self, op: Op, flat: list[Any]) -> None:
        target = self._container_target(
            op, SETITEM_TARGETS, "only sets items of dict, OrderedDict and Counter"
        )
        children, item = target.child_list(), target.appended  # item: its place in the order
        for key, value in zip(flat[::2], flat[1::2], strict=False):  # `add_child`, inlined
            if isinstance(key, Node):  # an object as a key: both named by the item's place
                target.add_child(f".values()[{item}]", value)
                children.append((f".keys()[{item}]", key))
            elif isinstance(value, Node):
                children.append((key_label(key), value))
            item += 1
        target.appended = item

    # MARK: the machine's.

    def _op_TUPLE(self, op: Op) -> None:
        self._push(tuple_node(self._pop_mark(op)))

    def _op_TUPLE1(self, op: Op) -> None:
        """TUPLE1-3: the top 1-3 values become one tuple (a short stack raises as the
        machine's pops do)."""
        stack, count = self.stack, _TUPLE_SIZES[op.name]
        if len(stack) < count:
            for _ in range(count):
                self._pop(op)
        items = stack[-count:]
        del stack[-count:]
        stack.append(tuple_node(items))

    _op_TUPLE2 = _op_TUPLE3 = _op_TUPLE1

    # NONE, NEWFALSE, NEWTRUE: the machine's.

    def _op_EMPTY_TUPLE(self, op: Op) -> None:
        self._push(tuple_node([]))

    def _op_EMPTY_LIST(self, op: Op) -> None:
        self._push(Node("builtins.list"))

    def _op_EMPTY_DICT(self, op: Op) -> None:
        self._push(Node("builtins.dict"))

    def _op_EMPTY_SET(self, op: Op) -> None:
        self.gate.set_made()
        self._push(Node("builtins.set"))

    # BININT, BININT1, BININT2, BINFLOAT: the machine's.

    def _op_BINUNICODE(self, op: Op) -> None:
        """Strings stay `Blob`s: a length and a preview, as decoded."""
        self._push(op.arg)

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

    def _op_BINPERSID(self, op: Op) -> None:
        pid = self._pop(op)
        result = Node("torch.storage.TypedStorage")
        if self.gate.storage_is_torchs(pid):  # an object's .dtype: torch's to judge
            self._push(result)
            return
        problem = self._persistent_problem(pid, op)
        if problem is not None:
            fix = "re-save the checkpoint with torch.save"
            self._flag(result, Finding("bad-persistent-id", problem, None, fix, False, op.offset))
        self._push(result)
        if judged_by_gate(pid):
            self.gate.storage(pid, result)
        else:  # a key torch.save never writes (an int, bytes, long text): torch judges it
            self.gate.exotic = True

    def _persistent_problem(self, pid: Any, op: Op) -> str | None:
        if isinstance(pid, int) and not isinstance(pid, bool):
            return f"integer persistent id {pid} at offset {op.offset}: not a storage reference"
        if not isinstance(pid, Node) or pid.type_name != "builtins.tuple":
            return f"persistent id at offset {op.offset} is not a tuple"
        items = pid.items
        if items is None or not items or not value_is(items[0], "storage"):
            return f"persistent id at offset {op.offset} is not a ('storage', ...) tuple"
        if self.storage_sizes is None:
            self.storages += 1  # a legacy file's: torch's unpickler checks them (stage 2)
            return None
        if len(items) != 5:
            return f"storage id at offset {op.offset} has {len(items)} fields, expected 5"
        _tag, storage_type, key, _location, numel = items
        if not (isinstance(storage_type, Node) and storage_type.type_name == GLOBAL_TYPE):
            return f"storage id at offset {op.offset} does not name a storage type"
        if not isinstance(numel, int):
            return f"storage id at offset {op.offset} has a malformed size"
        self.storages += 1
        found = storage_key(key, self.data)
        if found is None:
            return None  # torch's to judge (stage 2): see _op_BINPERSID
        kind, sizes = storage_type.name or "?", self.allow.storage_sizes
        return storage_problem(self.storage_decls, self.storage_sizes, sizes, found, kind, numel)

    def _op_BINGET(self, op: Op) -> None:
        self._push(self.memo_get(op.arg, op.offset))

    _op_LONG_BINGET = _op_BINGET

    def _op_BINPUT(self, op: Op) -> None:
        self.memo_put(op.arg, self._top(op))

    _op_LONG_BINPUT = _op_BINPUT

    # LONG1, PROTO, STOP: the machine's.
