"""What the auditor's symbolic run builds: `Node`s standing for objects, `Finding`s on them,
and the path from the root to each finding (`root['model']['seed_slots.r0c1._extra_state']
['seed_state'].stage`)."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from pytest_ckpt.audit.advice import ENUM_FIX, GENERIC_KIND, OBJECT_STATE_FIX, Fix, fix_for_name
from pytest_ckpt.audit.opcodes import Blob

GLOBAL_TYPE = "<global>"  # the type of a Node standing for a GLOBAL (a class or function)
STATE_LABEL = "<state>"  # links an object to its BUILD state dict: entries read as attributes

_IDENTIFIER_KEY = re.compile(r"\['([A-Za-z_][A-Za-z0-9_]*)'\]")
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


def key_label(key: Any) -> str:
    if isinstance(key, Blob):
        text = key.preview if key.complete else f"{key.preview}..."
        return f"[{text!r}]"
    if isinstance(key, Node):
        return f"[<{key.type_name}>]"
    return f"[{key!r}]"


def attribute_label(label: str | int) -> str:
    """An entry of a BUILD state as an attribute; int labels (an APPEND onto the state
    dict, which torch refuses) and odd keys show as `__dict__` items."""
    if isinstance(label, int):
        return f".__dict__[{label}]"
    match = _IDENTIFIER_KEY.fullmatch(label)
    return f".{match.group(1)}" if match else f".__dict__{label}"


def _path_to(node: Node, parents: dict[int, tuple[Node | None, str | int]]) -> str | None:
    if id(node) not in parents:
        return None
    raw: list[str | int] = []
    current: Node | None = node
    while current is not None:
        parent, label = parents[id(current)]
        raw.append(label)
        current = parent
    raw.reverse()
    labels: list[str] = []
    for i, label in enumerate(raw):
        if label == STATE_LABEL:
            if i == len(raw) - 1:
                labels.append(".__dict__")
        elif i and raw[i - 1] == STATE_LABEL:
            labels.append(attribute_label(label))
        else:
            labels.append(f"[{label}]" if isinstance(label, int) else str(label))
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


def value_is(value: Any, text: str) -> bool:
    """Is `value` the complete string (or bytes) `text`?"""
    return isinstance(value, Blob) and value.complete and value.preview in (text, text.encode())


def collect_findings(root: Any, loose: list[Finding], flagged: list[Node]) -> list[Finding]:
    """Give each finding the path of the first (shortest) route from the root to its node.

    The walk records parent links only; a path string is built just for the nodes that
    carry findings, so a deeply nested file costs linear time.
    """
    parents: dict[int, tuple[Node | None, str | int]] = {}
    if isinstance(root, Node) and flagged:
        parents[id(root)] = (None, "root")
        queue: deque[Node] = deque([root])
        while queue:
            node = queue.popleft()
            for label, child in node.children:
                if id(child) not in parents:
                    parents[id(child)] = (node, label)
                    queue.append(child)
    findings = []
    for finding in loose:
        finding.path = finding.path or "root"
        findings.append(finding)
    for node in flagged:
        path = _path_to(node, parents)
        for finding in node.findings:
            finding.path = path or f"<discarded object built at offset {finding.offset}>"
            _refine_fix(finding, node)
            if node.blocks_allowlisting:
                finding.allowlist_helps = False
            findings.append(finding)
    return findings
