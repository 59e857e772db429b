"""What the auditor's symbolic run builds: `Node`s standing for objects and `Finding`s on
them, and how a label reads in a path (`root['model']['seed_slots.r0c1._extra_state']
['seed_state'].stage`). Where each finding is goes in `findings`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_ckpt.audit.global_kinds import display
from pytest_ckpt.audit.opcodes import PREVIEW, Blob

GLOBAL_TYPE = "<global>"  # the type of a Node standing for a GLOBAL (a class or function)
STATE_LABEL = "<state>"  # links an object to its BUILD state dict: entries read as attributes

_IDENTIFIER_KEY = re.compile(r"\['([A-Za-z_][A-Za-z0-9_]*)'\]")
MAX_FINDINGS = 1000  # kept per pickle; past it, repeats are counted, not kept (torch_rules._flag)
_MAX_PATH_PARTS = 40  # longer paths are shown with the middle elided


@dataclass(slots=True)
class Finding:
    """One object torch would refuse (or one refused operation), at `path`. `needs`: the
    class names whose allow-listing clears it for this object, what its fix replaces with it
    included (empty when allow-listing cannot: a function, an unknown name, a refused
    operation); `allowlist_helps`: whether `needs` would be enough for this object (the
    whole file's answer is `Report.safe_globals`); `also_at`: the other paths of the same
    object (`more_sites` more past the per-pickle bound, counted); `fix_kind`: which fix
    `fix` describes (`advice.Fix.kind`: "Enum", "datetime", "nn.Module", "deque"...)."""

    kind: str
    detail: str
    global_name: str | None
    fix: str
    allowlist_helps: bool
    offset: int
    path: str = ""
    needs: tuple[str, ...] = ()
    also_at: list[str] = field(default_factory=list)
    more_sites: int = 0
    fix_kind: str = ""

    def copy_at(self, offset: int) -> Finding:
        """This finding for another object, built at `offset`, its other sites to come:
        `dataclasses.replace(self, offset=offset, also_at=[], more_sites=0)` spelt out
        (one per object built from a refused global; replace costs six times as much)."""
        return Finding(
            self.kind, self.detail, self.global_name, self.fix, self.allowlist_helps, offset,
            self.path, self.needs, [], 0, self.fix_kind,
        )  # fmt: skip


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
        # int labels are list/tuple indices; a list from the first (`child_list`): most
        # nodes a scan makes never get one
        self.children: Sequence[tuple[str | int, Node]] = ()
        self.appended = 0  # items appended (list indices) or set (a dict's items) so far
        self.items = items
        self.findings: Sequence[Finding] = ()  # a list once flagged: most nodes never are
        self.blocks_allowlisting = False
        self.shape = ""  # "enum-like" (class called with one primitive) or "object-state"

    def add_child(self, label: str | int, value: Any) -> None:
        if isinstance(value, Node):
            self.child_list().append((label, value))

    def child_list(self) -> list[tuple[str | int, Node]]:
        """The children as a list to add to."""
        children = self.children
        if type(children) is not list:
            children = self.children = list(children)
        return children


def key_label(key: Any) -> str:
    if isinstance(key, Blob):  # (`Blob.complete`, inline: a state dict's every key)
        text = key.preview if key.length <= PREVIEW else f"{key.preview}..."
        return f"[{text!r}]"
    if isinstance(key, Node):
        return f"[<{display(key.type_name)}>]"
    return f"[{key!r}]"


def attribute_label(label: str | int) -> str:
    """An entry of a BUILD state as an attribute; int labels (an APPEND onto the state
    dict, which torch refuses) and odd keys show as `__dict__` items."""
    if isinstance(label, int):
        return f".__dict__[{label}]"
    match = _IDENTIFIER_KEY.fullmatch(label)
    return f".{match.group(1)}" if match else f".__dict__{label}"


def one_primitive(args: Node) -> bool:
    """Is this argument tuple a single primitive (an Enum's value, a float subclass's)?"""
    return args.items is not None and len(args.items) == 1 and not isinstance(args.items[0], Node)


def value_is(value: Any, text: str) -> bool:
    """Is `value` the complete string (or bytes) `text`?"""
    return isinstance(value, Blob) and value.complete and value.preview in (text, text.encode())


_KEEP_ITEMS = 8  # tuples this short keep their items (persistent ids, REDUCE args)


def tuple_node(items: list[Any]) -> Node:
    """A tuple the pickle builds; short ones keep their items (a storage id, call args)."""
    node = Node("builtins.tuple", items=items if len(items) <= _KEEP_ITEMS else None)
    if len(items) == 1:  # (most: a call's one argument, a planner entry's fqn)
        if type(items[0]) is Node:
            node.children = [(0, items[0])]
    else:
        node.children = [(i, item) for i, item in enumerate(items) if type(item) is Node]
    return node


def lift_state(inst: Node, state: Any) -> None:
    """Link a BUILD state to `inst` under `STATE_LABEL`: its entries read as attributes in
    paths (`.stage`). A link, not a copy: a state BUILT a million times stays one node."""
    if not isinstance(state, Node):
        return
    if state.type_name == "builtins.dict":
        inst.child_list().append((STATE_LABEL, state))
    elif state.type_name == "builtins.tuple":
        # (dict_state, slot_state), or a numpy array's; a copy: the state may be `inst`
        # itself (a tuple BUILT with itself), whose children this loop adds to
        for i, part in tuple(state.children):
            if part.type_name == "builtins.dict":
                lift_state(inst, part)
            else:  # (version, shape, dtype, ...): a state the class reads itself
                inst.child_list().append((f".__setstate__[{i}]", part))
    else:
        inst.child_list().append((".__setstate__", state))
