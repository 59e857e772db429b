"""What the fast `.metadata` proof keeps of each object: just what the machine's checks read.

The auditor's machine (`audit.verdict`, `audit.torch_rules`) builds a `Node` per object; its
checks look only at whether a value is a Node, its type name, a GLOBAL's dotted name and a
string's text. Here: a `str` is a Node of that type, a `Global` a GLOBAL Node, a `Blob` a
string or bytes as the decoder gives it, `PRIMITIVE` any other value. The helpers below are
the machine's checks on those; each raises `Unproven` where the machine would flag.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_ckpt.audit.allowlist import PARAMETER, Allowlist
from pytest_ckpt.audit.opcodes import Blob


@dataclass(slots=True, frozen=True)
class Global:
    """An allowed GLOBAL, by its dotted name (the machine's `<global>` Node)."""

    name: str


PRIMITIVE = 0
GLOBAL_TYPE_NAME = "<global>"
_REBUILD_FROM_TYPE = "torch._tensor._rebuild_from_type_v2"  # the machine special-cases it


class Unproven(Exception):
    """The proof gives up here: the general scan decides."""


def operand_text(value: object) -> str:
    """A STACK_GLOBAL operand as the machine writes it (`verdict._operand_text`)."""
    if type(value) is Blob:
        return str(value.preview)
    if type(value) is str:
        return f"<{value}>"
    if type(value) is Global:
        return f"<{GLOBAL_TYPE_NAME}>"
    raise Unproven("a primitive operand: the machine writes its repr")


def global_entry(allow: Allowlist, module: str, name: str) -> Global:
    """GLOBAL module/name, if the machine would not flag it."""
    dotted = allow.resolve(module, name)
    if module in allow.blocked_modules or dotted not in allow.names:
        raise Unproven(f"global {dotted}")
    return Global(dotted)


def is_node(value: object) -> bool:
    return type(value) is str or type(value) is Global


def type_of(value: object) -> str:
    return GLOBAL_TYPE_NAME if type(value) is Global else value  # type: ignore[return-value]


def reduce_result(allow: Allowlist, func: object) -> str:
    """The Node type REDUCE(func, ...) builds, if the machine would not flag it."""
    if type(func) is not Global or func.name == _REBUILD_FROM_TYPE:
        raise Unproven("REDUCE of something that is not a plain allowed global")
    return allow.result_type(func.name)


def newobj_result(allow: Allowlist, cls: object) -> str:
    """The Node type NEWOBJ(cls, ...) builds, if the machine would not flag it."""
    if type(cls) is not Global or (cls.name not in allow.classes and cls.name != PARAMETER):
        raise Unproven("NEWOBJ of something that is not an allowed class")
    return cls.name
