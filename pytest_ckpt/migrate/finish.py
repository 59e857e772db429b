"""The final pass of both migration modes: markers become what is written, by path.

It walks the value graph with an explicit stack (a list nested 100,000 deep needs no
recursion) and a memo by identity, so an object reached twice is converted once and written
once (`[x, x]` forty levels deep stays forty objects, a self-referential list stays one)
and is reported once, at the first path that reaches it. Paths are built lazily: a deep
graph does not pay for the text of every path.

`classify` (the --trust mode's) turns a live object the pass does not know into a marker of
`migrate.markers`; the static mode's machine already built markers, so anything unknown is
refused.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from pytest_ckpt.migrate import objects, rules
from pytest_ckpt.migrate.markers import (
    Converted,
    DefaultDict,
    DequeList,
    EnumValue,
    GlobalRef,
    ObjectRecord,
    Refused,
    SetList,
    TzInfo,
)

Path = Any  # a str (the root) or a (parent Path, suffix) pair


def render(path: Path) -> str:
    """The text of a lazy path; a very deep one keeps its first and last steps."""
    parts = []
    while isinstance(path, tuple):
        path, suffix = path
        parts.append(suffix)
    parts.append(path)
    parts.reverse()
    if len(parts) > 48:
        parts = [*parts[:32], f"...({len(parts) - 48} more)...", *parts[-16:]]
    return "".join(parts)


def _leaf_types() -> tuple[type, ...]:
    import torch

    return (
        int, float, str, bytes, bytearray, bool, complex, type(None), torch.Tensor,
        torch.nn.Parameter, torch.Size, torch.dtype, torch.device, torch.layout,
        torch.memory_format, torch.qscheme,
    )  # fmt: skip


class Finisher:
    """One final pass; `conversions` and `refusals` collect its report lines."""

    def __init__(self, classify: Callable[[Any], Any] | None = None) -> None:
        self.classify = classify
        self.conversions: list[str] = []
        self.refusals: list[str] = []
        self.memo: dict[int, Any] = {}
        self.keep: list[Any] = []  # what classify built, alive until the end (its ids)
        self.fixups: dict[int, list[tuple[Any, Any]]] = {}
        self.tasks: list[tuple] = []
        self.leaves = _leaf_types()
        self.internals = objects.module_internals()

    def run(self, root: Any, path: str = "root") -> Any:
        result: list[Any] = [None]
        self.tasks.append(("visit", root, path, result, 0))
        while self.tasks:
            task = self.tasks.pop()
            if task[0] == "visit":
                self._visit(*task[1:])
            elif task[0] == "tuple":
                self._close_tuple(*task[1:])
            elif task[0] == "set":  # its items are written: order them
                _order_set(task[1])
            else:  # "attributes": set what was converted on the object it belongs to
                for name, item in task[2].items():
                    setattr(task[1], name, item)
        return result[0]

    # ---- report ---------------------------------------------------------------------------

    def refuse(self, path: Path, reason: str) -> None:
        self.refusals.append(f"{render(path)}: {reason}")

    def convert(self, path: Path, what: str) -> None:
        self.conversions.append(f"{render(path)}: {what}")

    # ---- the walk -------------------------------------------------------------------------

    def child(self, value: Any, path: Path, target: Any, key: Any) -> None:
        self.tasks.append(("visit", value, path, target, key))

    def _visit(self, node: Any, path: Path, target: Any, key: Any) -> None:
        if type(node) in self.leaves:
            target[key] = node
        elif id(node) in self.memo:
            target[key] = self.memo[id(node)]
        elif id(node) in self.fixups:  # a tuple reached from inside itself (via a list)
            self.fixups[id(node)].append((target, key))
            self.refuse(
                path,
                "a tuple that contains itself (through a list or dict): torch.save writes "
                "it with POP, which weights_only refuses; fix: make it a list",
            )
        elif type(node) is tuple:
            self._tuple(node, path, target, key)
        else:
            target[key] = self._convert(node, path)

    def remember(self, node: Any, result: Any) -> Any:
        self.memo[id(node)] = result
        return result

    def _convert(self, node: Any, path: Path) -> Any:
        value = node
        if not isinstance(node, _MARKERS) and type(node) not in _CONTAINERS:
            if self.classify is None:
                self.refuse(path, f"a {type(node).__name__} value migrate does not know")
                return self.remember(node, None)
            value = self.classify(node)
            self.keep.append(node)
            if type(value) in self.leaves:
                return self.remember(node, value)
        if isinstance(value, ObjectRecord) and value.refused is not None:
            value = Refused(value.refused)
        if isinstance(value, Refused):
            self.refuse(path, value.reason)
            return self.remember(node, None)
        if isinstance(value, GlobalRef):
            self.refuse(path, f"a bare reference to {value.name}; fix: store its name")
            return self.remember(node, None)
        if isinstance(value, TzInfo):
            self.refuse(path, f"datetime.timezone outside a datetime; fix: {_TZ_FIX}")
            return self.remember(node, None)
        for rule in rules.RULES:  # the kinds migration converts, each writing its own
            if rule.finish is not None and rule.finishes(value):
                return rule.finish(rule, self, node, value, path)
        if isinstance(value, Converted):  # converted when read: reported and written
            self.convert(path, value.what)
            if type(value.value) is SetList:
                return self.as_set(node, value.value, path)
            if type(value.value) is list:
                return self.as_list(node, value.value, path)
            return self.remember(node, value.value)
        kind = type(value)
        if kind is collections.OrderedDict:
            shell: collections.OrderedDict[Any, Any] = collections.OrderedDict()
            attributes = dict(getattr(value, "__dict__", {}))  # a state_dict's _metadata
            if attributes:
                converted: dict[str, Any] = dict.fromkeys(attributes)
                self.tasks.append(("attributes", shell, converted))
                for name, item in attributes.items():
                    self.child(item, (path, f".{name}"), converted, name)
            return self.as_dict(node, value, shell, path)
        if kind in (dict, collections.Counter):
            return self.as_dict(node, value, kind(), path)
        if kind is list:
            return self.as_list(node, value, path)
        self.refuse(path, f"a {kind.__name__} value migrate does not know")
        return self.remember(node, None)

    def as_list(self, node: Any, items: list[Any], path: Path) -> list[Any]:
        shell = self.remember(node, [None] * len(items))
        for index in range(len(items) - 1, -1, -1):
            self.child(items[index], (path, f"[{index}]"), shell, index)
        return shell

    def as_set(self, node: Any, items: list[Any], path: Path) -> list[Any]:
        """A set's items as a list, sorted once they are written (`_order_set`)."""
        shell = self.remember(node, [None] * len(items))
        self.tasks.append(("set", shell))  # below its items' tasks: runs after them
        for index in range(len(items) - 1, -1, -1):
            self.child(items[index], (path, f"[{index}]"), shell, index)
        return shell

    def as_dict(self, node: Any, items: dict[Any, Any], shell: dict[Any, Any], path: Path) -> Any:
        self.remember(node, shell)
        entries = []
        for key, item in items.items():
            converted = self._key(key, path)
            if converted is not _BAD_KEY:
                shell[converted] = None  # keeps the order of the file
                entries.append((converted, item))
        for key, item in reversed(entries):
            self.child(item, (path, f"[{key!r}]"), shell, key)
        return shell

    def _key(self, key: Any, path: Path, depth: int = 0) -> Any:
        """A dict key as written: primitives, converted Enum members and datetimes, and
        tuples of those (keys are small: a short recursion, bounded)."""
        if type(key) in self.leaves:
            return key
        if isinstance(key, EnumValue):
            self.convert((path, f"[{key.value!r}] (key)"), rules.ENUM.note(key.cls))
            return key.value
        if isinstance(key, Converted) and type(key.value) in (str, float):
            return key.value
        if type(key) is tuple and len(key) < 64 and depth < 16:
            items = [self._key(item, path, depth + 1) for item in key]
            return _BAD_KEY if any(item is _BAD_KEY for item in items) else tuple(items)
        self.refuse((path, " (a key)"), f"a dict key migrate cannot convert ({type(key).__name__})")
        return _BAD_KEY

    def _tuple(self, node: tuple[Any, ...], path: Path, target: Any, key: Any) -> None:
        """Items first, then the tuple (the close task), put in place where it was reached
        and wherever its items reached it."""
        self.fixups[id(node)] = [(target, key)]
        slots: list[Any] = [None] * len(node)
        self.tasks.append(("tuple", node, slots))
        for index in range(len(node) - 1, -1, -1):
            self.child(node[index], (path, f"[{index}]"), slots, index)

    def _close_tuple(self, node: Any, slots: list[Any]) -> None:
        result = self.remember(node, tuple(slots))
        for target, key in self.fixups.pop(id(node)):
            target[key] = result

    def as_module(self, node: Any, record: ObjectRecord, path: Path) -> dict[str, Any]:
        """`{"class", "config", "state_dict", "modules"}`: the tensors of the whole tree by
        dotted name, every other attribute of each module (converted) in its config, each
        submodule's class and config in `modules`; hooks (code) are refused."""
        shell: dict[str, Any] = {"class": record.cls, "config": {}, "state_dict": {}}
        shell["modules"] = {}
        self.remember(node, shell)
        walk, seen = [("", record, shell["config"])], {id(node)}
        while walk:
            prefix, current, config = walk.pop()
            state = current.state
            where = (path, f".{prefix[:-1]}") if prefix else path
            for group in ("_parameters", "_buffers"):
                for name, tensor in _items(state.get(group)):
                    if tensor is not None:
                        dotted = prefix + name
                        shell["state_dict"][dotted] = None  # state_dict() order
                        self.child(tensor, (path, f".{dotted}"), shell["state_dict"], dotted)
            for name, item in state.items():
                if name in objects.MODULE_STATE:
                    continue
                if name in self.internals:
                    if "hook" in name and item:
                        self.refuse((where, f".{name}"), "module hooks are code; fix: remove them")
                    continue
                config[name] = None
                self.child(item, (where, f".{name}"), config, name)
            below = []
            for name, child in _items(state.get("_modules")):
                dotted = prefix + name
                marker = child
                if self.classify is not None and child is not None:
                    marker = self.classify(child)
                    self.keep.append(child)
                is_module = isinstance(marker, ObjectRecord) and marker.refused is None
                if is_module and marker.state.keys() >= objects.MODULE_STATE:
                    if id(child) in seen:
                        continue
                    seen.add(id(child))
                    sub = {"class": marker.cls, "config": {}}
                    shell["modules"][dotted] = sub
                    below.append((dotted + ".", marker, sub["config"]))
                else:
                    shell["modules"][dotted] = None
                    if child is not None:
                        self.child(child, (path, f".{dotted}"), shell["modules"], dotted)
            walk.extend(reversed(below))
        return shell


def _order_set(items: list[Any]) -> None:
    """Sort a set's written items when they are all of one sortable type (str, bytes, int,
    bool, float without NaN, tuples that compare): a set's iteration order depends on the
    process's hash seed, so the pickle's order (static) and the live set's (--trust) differ
    between processes. Any other set keeps the order it was read in."""
    kinds = {type(item) for item in items}
    if len(kinds) != 1:
        return
    kind = kinds.pop()
    if kind is float and any(item != item for item in items):
        return  # NaN compares false with everything: no order
    if kind in (str, bytes, int, bool, float):
        items.sort()
    elif kind is tuple:
        try:
            ordered = sorted(items)
        except TypeError:  # items that do not compare
            return
        items[:] = ordered


def _items(mapping: Any) -> list[tuple[Any, Any]]:
    return list(mapping.items()) if isinstance(mapping, dict) else []


_MARKERS = (Refused, GlobalRef, EnumValue, Converted, TzInfo, ObjectRecord)
_CONTAINERS = (
    list, tuple, dict, set, frozenset, collections.OrderedDict, collections.Counter,
    DequeList, SetList, DefaultDict,
)  # fmt: skip
_BAD_KEY = object()
_TZ_FIX = "store the UTC offset in seconds (tz.utcoffset(None).total_seconds())"
