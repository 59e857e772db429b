"""The opcodes torch's weights_only unpickler refuses, with their pickle semantics kept.

The machine has already flagged each of them (`verdict.PickleInterpreter.unaccepted`);
running them anyway lets one scan go on to find every other problem in the file. Mixed
into `verdict.PickleInterpreter` with `symbolic.AcceptedOpcodes`, whose stack, memo and
findings helpers they use.
"""

from __future__ import annotations

from typing import Any

from pytest_ckpt.audit.nodes import GLOBAL_TYPE, Node, key_label
from pytest_ckpt.audit.opcodes import Blob, MalformedPickle, Op
from pytest_ckpt.audit.symbolic import AcceptedOpcodes


def _operand_text(value: Any) -> str:
    """A STACK_GLOBAL operand as text: strings as they are, anything else by its type (a
    node's repr would put a memory address in the report)."""
    if isinstance(value, Blob):
        return str(value.preview)
    if isinstance(value, Node):
        return f"<{value.type_name}>"
    return repr(value)


class RefusedOpcodes:
    """The opcodes torch refuses: flagged by the loop, their semantics kept to find more."""

    _PUSH_ARG = AcceptedOpcodes._op_BINUNICODE  # strings and bytes: their Blob
    _op_STRING = _op_BINSTRING = _op_UNICODE = _op_SHORT_BINUNICODE = _PUSH_ARG
    _op_BINUNICODE8 = _op_BINBYTES = _op_SHORT_BINBYTES = _op_BINBYTES8 = _PUSH_ARG
    _op_BYTEARRAY8 = _PUSH_ARG

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
        finding = self._global_finding(node.name or "", op.offset, f"extension code {op.arg}")
        self._flag(node, finding)
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
