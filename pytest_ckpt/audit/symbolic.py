"""What each pickle opcode does, symbolically: the `_op_*` handlers of the auditor.

The machine (`machine.PickleMachine`) runs the loop and gives the opcodes every semantics
means alike (MARK, NONE, the booleans, numbers); this module says what the others build in
the auditor (a `Node` per object) and when torch would refuse them. `AcceptedOpcodes`
mirrors torch's weights_only unpickler check for check; `RefusedOpcodes` keeps the pickle
semantics of the opcodes torch refuses (the machine has already flagged them through
`ACCEPTED`), so that one scan goes on to find every problem. Both are mixed into
`verdict.PickleInterpreter` and use its stack, memo and findings helpers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pytest_ckpt.audit.advice import OBJECT_STATE_FIX, fix_for_name
from pytest_ckpt.audit.allowlist import (
    APPEND_TARGETS,
    ORDERED_DICT,
    PARAMETER,
    SETITEM_TARGETS,
    TENSOR,
)
from pytest_ckpt.audit.global_kinds import advisable, display
from pytest_ckpt.audit.nodes import (
    GLOBAL_TYPE,
    STATE_LABEL,
    Finding,
    Node,
    key_label,
    one_primitive,
    value_is,
)
from pytest_ckpt.audit.numpy_pickles import reduce_result
from pytest_ckpt.audit.opcodes import Blob, MalformedPickle, Op

_SETS = ("builtins.set", "builtins.frozenset")


class AcceptedOpcodes:
    """The opcodes torch's weights_only unpickler implements, with its checks."""

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
        self._push(self._tuple([self._pop(op), self._pop(op)][::-1]))

    def _op_TUPLE3(self, op: Op) -> None:
        self._push(self._tuple([self._pop(op), self._pop(op), self._pop(op)][::-1]))

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
        shown = display(dotted)  # a name is the file's data: long ones are cut for reports
        if self.allow.blocked(module, name):
            detail = f"global {shown}: module {display(module)} is blocked by torch"
            self._flag(node, self._global_finding(shown, op.offset, detail))
        elif dotted not in self.allow.names:
            detail = f"unsupported global {shown}"
            self._flag(node, self._global_finding(shown, op.offset, detail))
        self._push(node)

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
            result.findings += source.findings
            self.built_from[id(source)] = (source, source.findings)
            source.findings = []
            return
        first = self.built_from.get(id(source))
        if first is not None and first[0] is source:
            for finding in first[1]:
                self._flag(result, replace(finding, offset=offset, also_at=[], more_sites=0))

    def _op_REDUCE(self, op: Op) -> None:
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
            self._flag(result, self._operation_finding(detail, op.offset, advice))
        if result.type_name in _SETS and isinstance(items[0], Node):  # set([...]): its items
            result.children = [("[...]", child) for _i, child in items[0].children]
        else:
            result.add_child("(args)", args)
        self.stack[-1] = result

    def _op_NEWOBJ(self, op: Op) -> None:
        args = self._pop(op)
        cls = self._pop(op)
        if isinstance(cls, Node) and cls.type_name == GLOBAL_TYPE:
            result = Node(cls.name or "?")
            if isinstance(args, Node) and one_primitive(args):  # float/int subclasses
                arg = args.items[0]  # type: ignore[index]
                result.shape = {float: "float-like", int: "int-like"}.get(type(arg), "")
            refused = cls.findings or id(cls) in self.built_from
            if not refused and cls.name not in self.allow.classes and cls.name != PARAMETER:
                self._flag(
                    result,
                    self._global_finding(
                        display(cls.name or "?"),
                        op.offset,
                        f"NEWOBJ of {display(cls.name or '?')}: torch only creates nn.Parameter or "
                        "allow-listed classes",
                    ),
                )
            self._take_over(result, cls, op.offset)
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
            finding = self._operation_finding(
                f"BUILD (setting object state) on {display(inst.type_name)} at offset {op.offset}",
                op.offset,
                "store the object's state as a dict of primitives instead",
                OBJECT_STATE_FIX.kind,
            )
            finding.needs = (inst.type_name,) if advisable(inst.type_name) else ()
            self._flag(inst, finding)
        if isinstance(state, Node):
            inst.shape = "object-state"
        self._lift_state(inst, state)

    def _lift_state(self, inst: Node, state: Any) -> None:
        """Link the state to `inst` under `STATE_LABEL`: its entries read as attributes in
        paths (`.stage`). A link, not a copy: a state BUILT a million times stays one node."""
        if not isinstance(state, Node):
            return
        if state.type_name == "builtins.dict":
            inst.children.append((STATE_LABEL, state))
        elif state.type_name == "builtins.tuple":
            for i, part in state.children:  # (dict_state, slot_state), or a numpy array's
                if part.type_name == "builtins.dict":
                    self._lift_state(inst, part)
                else:  # (version, shape, dtype, ...): a state the class reads itself
                    inst.children.append((f".__setstate__[{i}]", part))
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
                fix = fix_for_name(target.type_name)
                finding = self._operation_finding(detail, op.offset, fix.advice, fix.kind)
                self._flag(target, finding)
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
            item = target.appended  # the item's place in the dict's order
            target.appended += 1
            if isinstance(key, Node):  # an object as a key: both named by the item's place
                target.add_child(f".values()[{item}]", value)
                target.children.append((f".keys()[{item}]", key))
            else:
                target.add_child(key_label(key), value)

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
