"""Find, in a live state object, what `torch.load(weights_only=True)` will refuse, by path.

This reads Python objects before they are saved, so it can name the exact path of each
offender (`root['env']['model']['state_dict']['seed_slots.r0c1._extra_state']['seed_state']
['stage']`) and the fix. It explains a failure; the verdict is always torch's own load.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from pytest_ckpt.audit.advice import Fix, fix_for_type

# Exact types that pickle to globals in torch's default weights_only allowlist (or to no
# global at all). Subclasses (an IntEnum is an int) pickle under their own name: not safe.
_SAFE_LEAVES: frozenset[type] = frozenset(
    {str, bytes, bytearray, int, float, complex, bool, type(None)}
)
_SAFE_CONTAINERS: frozenset[type] = frozenset(
    {list, tuple, dict, set, collections.OrderedDict, collections.Counter}
)


MAX_PATHS = 10_000  # paths spelled out before the scan stops (shared objects multiply paths)


@dataclass(slots=True, frozen=True)
class UnsafeObject:
    path: str
    type_name: str
    fix: Fix

    def describe(self) -> str:
        article = "an" if self.fix.kind[:1].lower() in "aeiou" else "a"
        return f"{self.path} is {self.type_name} ({article} {self.fix.kind}): {self.fix.advice}"


@dataclass(slots=True, frozen=True)
class UnsafeScan:
    """The refused objects by path, in walk order; `complete` is False when the scan stopped
    at its limit of paths, so a caller can say that more remain."""

    objects: tuple[UnsafeObject, ...]
    complete: bool = True


def _torch_safe_types() -> frozenset[type]:
    import torch

    types = {torch.Tensor, torch.nn.Parameter, torch.Size, torch.dtype, torch.device}
    types.update({type(torch.contiguous_format), type(torch.strided)})
    return frozenset(types)


def find_unsafe_objects(value: Any, *, root: str = "root", limit: int = MAX_PATHS) -> UnsafeScan:
    """Every path under `value` at which weights_only=True would refuse an object, including
    those inside a refused object (a dataclass holding an Enum, a datetime and a deque of
    Enums is four findings, as the static audit of the saved file finds them): fixing the
    outer one alone (`to_dict()`) would still leave the inner ones.

    A shared object is named at every path that reaches it (an Enum member held as `.stage`
    and inside a history tuple is two findings: fixing one path leaves the other), as a plain
    recursive walk of the objects would name it. The objects are visited once (iteratively,
    so deep nesting cannot exhaust the recursion limit), then the paths are spelled out, a
    cycle entered once; past `limit` paths the scan stops and says so (`complete` False).
    """
    graph = _ObjectGraph(value)
    leads = graph.leading_to_refused()
    found: list[UnsafeObject] = []
    on_path: set[int] = set()
    stack: list[tuple[str, int] | int] = [(root, id(value))] if id(value) in leads else []
    while stack:
        entry = stack.pop()
        if isinstance(entry, int):  # leaving a node: it may be reached again by another path
            on_path.discard(entry)
            continue
        path, key = entry
        if key in on_path:  # a cycle: this path holds an object already being spelled out
            continue
        if len(found) >= limit:
            return UnsafeScan(tuple(found), complete=False)
        node = graph.nodes[key]
        if node.refused is not None:
            found.append(UnsafeObject(path, node.refused[0], node.refused[1]))
        on_path.add(key)
        stack.append(key)
        stack.extend(
            (f"{path}{suffix}", child)
            for suffix, child in reversed(node.children)
            if child in leads
        )
    return UnsafeScan(tuple(found), complete=True)


@dataclass(slots=True)
class _Node:
    refused: tuple[str, Fix] | None  # (type name, fix) when torch refuses this object
    children: list[tuple[str, int]]  # (path suffix, id of the child) for what is walked


class _ObjectGraph:
    """The objects under a value that may matter to torch: containers it knows, refused
    objects, and what a refused object's fix keeps; each object once, by id."""

    def __init__(self, value: Any) -> None:
        self.safe_torch = _torch_safe_types()
        self.nodes: dict[int, _Node] = {}
        self._alive: list[Any] = []  # keeps every walked object, so no id is reused
        pending = [value]
        while pending:
            item = pending.pop()
            if id(item) in self.nodes:
                continue
            children = self._visit(item)
            pending.extend(child for _, child in children if id(child) not in self.nodes)

    def _visit(self, item: Any) -> list[tuple[str, Any]]:
        kind = type(item)
        self._alive.append(item)
        children: list[tuple[str, Any]] = []
        refused = None
        if (
            kind in _SAFE_LEAVES
            or kind in self.safe_torch
            or _is_plain_tensor(item, self.safe_torch)
        ):
            pass
        elif kind in _SAFE_CONTAINERS:
            if isinstance(item, dict):
                children = [(f"[{k!r}]", v) for k, v in item.items()]
                children += [(".keys()", k) for k in item if type(k) not in _SAFE_LEAVES]
            else:
                values = sorted(item, key=repr) if isinstance(item, set) else item
                children = [(f"[{i}]", v) for i, v in enumerate(values)]
        else:
            fix = fix_for_type(kind)
            refused = (f"{kind.__module__}.{kind.__qualname__}", fix)
            if fix.kind in _KEEPS_CONTENTS:
                children = _contents(item)
        children = [
            (suffix, child) for suffix, child in children if type(child) not in _SAFE_LEAVES
        ]
        self.nodes[id(item)] = _Node(refused, [(suffix, id(child)) for suffix, child in children])
        return children

    def leading_to_refused(self) -> set[int]:
        """The objects from which a refused object can be reached (itself included)."""
        parents: dict[int, list[int]] = {}
        for key, node in self.nodes.items():
            for _, child in node.children:
                parents.setdefault(child, []).append(key)
        leads = {key for key, node in self.nodes.items() if node.refused is not None}
        pending = list(leads)
        while pending:
            for parent in parents.get(pending.pop(), ()):
                if parent not in leads:
                    leads.add(parent)
                    pending.append(parent)
        return leads


# Refused objects whose fix keeps what they hold (to_dict() of a dataclass, list(d) of a
# deque): what they hold must load too. The others are replaced whole by the fix (a module's
# state_dict(), a datetime's ISO string, an Enum's value), so their insides are not reported.
_KEEPS_CONTENTS = frozenset(
    {
        "dataclass",
        "dataclass or object with attributes",
        "object",
        "deque",
        "defaultdict",
        "frozenset",
        "argparse.Namespace",
    }
)


def _contents(item: Any) -> list[tuple[str, Any]]:
    """What pickling `item` would save with it, with path suffixes: items of a container,
    entries of a mapping, attributes of an object (its `__reduce_ex__` state)."""
    if isinstance(item, dict):
        return [(f"[{k!r}]", v) for k, v in item.items()]
    if isinstance(item, (list, tuple, set, frozenset, collections.deque)):
        values = sorted(item, key=repr) if isinstance(item, (set, frozenset)) else item
        return [(f"[{i}]", v) for i, v in enumerate(values)]
    try:
        reduced = item.__reduce_ex__(2)
    except (TypeError, AttributeError, ValueError):  # cannot be pickled at all: said already
        return []
    if not isinstance(reduced, tuple) or len(reduced) < 3:
        return []
    state = reduced[2]
    if isinstance(state, tuple) and len(state) == 2:  # (__dict__, slots)
        state = {**(state[0] or {}), **(state[1] or {})}
    if isinstance(state, dict):
        return [(f".{k}", v) for k, v in state.items()]
    return [(".__getstate__()", state)] if state is not None else []


def _is_plain_tensor(item: Any, safe_torch: frozenset[type]) -> bool:
    """Tensor subclasses other than Parameter pickle under their own class: refused."""
    import torch

    return isinstance(item, torch.Tensor) and type(item) in safe_torch
