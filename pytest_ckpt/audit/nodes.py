"""What the auditor's symbolic run builds: `Node`s standing for objects, `Finding`s on them,
and the path from the root to each finding (`root['model']['seed_slots.r0c1._extra_state']
['seed_state'].stage`)."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pytest_ckpt.audit.advice import (
    ENUM_FIX,
    FLOAT_FIX,
    GENERIC_KIND,
    INT_FIX,
    MODULE_FIX,
    NUMPY_RNG_FIX,
    OBJECT_STATE_FIX,
    fix_for_name,
)
from pytest_ckpt.audit.global_kinds import advisable, display, kind_of, runs_code
from pytest_ckpt.audit.opcodes import Blob

GLOBAL_TYPE = "<global>"  # the type of a Node standing for a GLOBAL (a class or function)
STATE_LABEL = "<state>"  # links an object to its BUILD state dict: entries read as attributes

_IDENTIFIER_KEY = re.compile(r"\['([A-Za-z_][A-Za-z0-9_]*)'\]")
MAX_FINDINGS = 1000  # kept per pickle; past it, findings are counted, not kept
_MAX_PATH_PARTS = 40  # longer paths are shown with the middle elided
MODULE_STATE = frozenset({"._parameters", "._buffers", "._modules"})  # an nn.Module's state
_SHAPE_FIXES = {
    "enum-like": (ENUM_FIX, "looks like an Enum member"),
    "object-state": (OBJECT_STATE_FIX, "an object with attributes"),
    "float-like": (FLOAT_FIX, "a float subclass"),
    "int-like": (INT_FIX, "an int subclass"),
}


@dataclass(slots=True)
class Finding:
    """One place torch would refuse. `needs`: the class names whose allow-listing clears it
    (empty when allow-listing cannot: a function, an unknown name, a refused operation);
    `also_at`: the other paths of the same object (`more_sites` more not listed)."""

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
        return f"[<{display(key.type_name)}>]"
    return f"[{key!r}]"


def attribute_label(label: str | int) -> str:
    """An entry of a BUILD state as an attribute; int labels (an APPEND onto the state
    dict, which torch refuses) and odd keys show as `__dict__` items."""
    if isinstance(label, int):
        return f".__dict__[{label}]"
    match = _IDENTIFIER_KEY.fullmatch(label)
    return f".{match.group(1)}" if match else f".__dict__{label}"


_OWNING_LABELS = ("(args)", "(kwargs)", ".__setstate__")  # what rebuilds the object itself
_FOLDABLE = ("unsupported-global", "unsupported-operation")
_MAX_SITES = 5  # paths listed per shared object; the rest are counted
_HEAD = 5  # labels kept at the start of an elided path


class _Site(NamedTuple):
    """How the walk first reached a node: its parent, label, depth, first labels, and the
    flagged object whose own rebuilding (constructor arguments, pickled state) holds it.
    A tuple: the walk makes one per object of the pickle."""

    parent: Node | None
    label: str | int
    depth: int
    head: tuple[str | int, ...]
    owner: Node | None


new_site = tuple.__new__  # NamedTuple's own __new__ is a Python function: this is the C one


def _text(label: str | int) -> str:
    return f"[{label}]" if isinstance(label, int) else label


def _path_to(node: Node, sites: dict[int, _Site]) -> str | None:
    """The path of the first route to `node`: at most _MAX_PATH_PARTS labels are walked,
    whatever the depth (deeper paths keep their first labels, from the walk, and their last)."""
    site = sites.get(id(node))
    if site is None:
        return None
    raw: list[str | int] = []
    current: Node | None = node
    while current is not None and len(raw) < _MAX_PATH_PARTS - _HEAD:
        step = sites[id(current)]
        raw.append(step.label)
        current = step.parent
    raw.reverse()
    if current is None:
        return _render(raw)
    hidden = site.depth + 1 - len(raw) - _HEAD
    middle = f"...({hidden} levels)..." if hidden > 0 else ""
    return _render(site.head[: site.depth + 1 - len(raw)]) + middle + _render(raw)


def _render(raw: Sequence[str | int]) -> str:
    """Labels as a path; a BUILD state's entries read as attributes (`STATE_LABEL`)."""
    labels: list[str] = []
    for i, label in enumerate(raw):
        if label == STATE_LABEL:
            if i == len(raw) - 1:
                labels.append(".__dict__")
        elif i and raw[i - 1] == STATE_LABEL:
            labels.append(attribute_label(label))
        else:
            labels.append(_text(label))
    return "".join(labels)


def _refine_fix(finding: Finding, node: Node) -> None:
    """A name alone says little about an unknown class; how the pickle built it says more."""
    if (
        finding.kind != "unsupported-global"
        or fix_for_name(finding.global_name or "").kind != GENERIC_KIND
    ):
        return
    labels = {label for label, _child in node.children}
    for label, child in node.children:  # a BUILD state, linked: its entries are attributes
        if label == STATE_LABEL:
            labels |= {attribute_label(entry) for entry, _value in child.children}
    if node.shape == "object-state" and labels >= MODULE_STATE:
        fix, hint = MODULE_FIX, "an nn.Module"
    else:
        fix, hint = _SHAPE_FIXES.get(node.shape, (None, ""))
    if fix is None:
        return
    name = finding.global_name or ""
    is_class = kind_of(name) == "class"
    finding.fix = f"{fix.advice} ({hint})"
    if fix is ENUM_FIX and not is_class:  # a function called with a string looks the same
        finding.fix = (
            f"{name} is called with one value, as an Enum class is, or a function: if it is "
            f"your Enum, {fix.advice}; the auditor cannot tell which, so it never offers it "
            "for allow-listing"
        )
    finding.allowlist_helps = fix.allowlist_helps and is_class


def one_primitive(args: Node) -> bool:
    """Is this argument tuple a single primitive (an Enum's value, a float subclass's)?"""
    return args.items is not None and len(args.items) == 1 and not isinstance(args.items[0], Node)


def value_is(value: Any, text: str) -> bool:
    """Is `value` the complete string (or bytes) `text`?"""
    return isinstance(value, Blob) and value.complete and value.preview in (text, text.encode())


def collect_findings(root: Any, loose: list[Finding], flagged: list[Node]) -> list[Finding]:
    """Give each finding the path of the first (shortest) route from the root to its node,
    and the paths of its other routes (`also_at`).

    The walk records one `_Site` per node; a path string is built only for nodes that carry
    findings, from at most _MAX_PATH_PARTS steps, so a deeply nested file costs linear time.
    A finding inside the constructor arguments or pickled state of another flagged object
    (a defaultdict's factory, a numpy array's dtype) is folded into that object's finding:
    its fix replaces the whole object. Names that run code are never folded.
    """
    sites: dict[int, _Site] = {}
    extra_routes: dict[int, list[tuple[Node, str | int]]] = {}
    route_counts: dict[int, int] = {}
    if isinstance(root, Node) and flagged:
        sites[id(root)] = new_site(_Site, (None, "root", 0, ("root",), None))
        queue: deque[Node] = deque([root])
        while queue:
            node = queue.popleft()
            site = sites[id(node)]
            for label, child in node.children:
                key = id(child)
                if key not in sites:
                    depth = site.depth + 1
                    head = (*site.head, label) if depth < _HEAD else site.head
                    owns = node.findings and str(label).startswith(_OWNING_LABELS)
                    owner = node if owns else site.owner
                    sites[key] = new_site(_Site, (node, label, depth, head, owner))
                    queue.append(child)
                elif child.findings:
                    count = route_counts.get(key, 0) + 1
                    route_counts[key] = count
                    if count <= _MAX_SITES:
                        extra_routes.setdefault(key, []).append((node, label))
    findings = []
    for finding in loose:
        finding.path = finding.path or "root"
        findings.append(finding)
    folded: dict[int, list[Finding]] = {}
    for node in flagged:
        for finding in node.findings:
            name = finding.global_name or ""
            if finding.kind == "unsupported-global" and not finding.needs and advisable(name):
                finding.needs = (name,)
        site = sites.get(id(node))
        owner = site.owner if site is not None else None
        if owner is not None and all(_foldable(f) for f in node.findings):
            folded.setdefault(id(owner), []).extend(node.findings)
            continue
        path = _path_to(node, sites)
        also = [
            f"{_path_to(parent, sites)}{_text(label)}"
            for parent, label in extra_routes.get(id(node), ())
        ]
        for finding in node.findings:
            finding.path = path or (
                f"<an object built at offset {finding.offset} and dropped: not in the loaded "
                "value, yet torch refuses it>"
            )
            finding.also_at = also
            finding.more_sites = max(route_counts.get(id(node), 0) - len(also), 0)
            _refine_fix(finding, node)
            if site is not None and _in_legacy_rng_state(site):
                finding.fix = NUMPY_RNG_FIX.advice
            if node.blocks_allowlisting:
                finding.allowlist_helps = False
                finding.needs = ()
            findings.append(finding)
    for node in flagged:
        inner = folded.get(id(node))
        if inner and node.findings:
            _fold(node.findings[0], inner)
    return findings


def _in_legacy_rng_state(site: _Site) -> bool:
    """Is this the key array of np.random.get_state()'s ('MT19937', keys, pos, ...)?"""
    parent = site.parent
    items = parent.items if parent is not None else None
    return bool(items) and site.label == 1 and value_is(items[0], "MT19937")  # type: ignore[index]


def _foldable(finding: Finding) -> bool:
    return finding.kind in _FOLDABLE and not runs_code(finding.global_name or "")


def _fold(outer: Finding, inner: list[Finding]) -> None:
    """`outer`'s fix replaces the object, so what its rebuilding names needs no fix of its
    own; the names still count for the file's allowlist (`needs`)."""
    names = sorted({f.global_name for f in inner if f.global_name}) or ["objects torch refuses"]
    outer.detail += f" (rebuilt with {', '.join(names)})"
    if outer.needs:
        extra = [n for f in inner for n in f.needs]
        outer.needs = (*outer.needs, *extra) if all(f.needs for f in inner) else ()
