"""Carry out each finding's fix at its paths, as a user following the auditor would: the
one-round check of issue 19 ("fixing exactly what it names makes the file load").

Paths are parsed in the syntax the README documents (`root['k'][0].attr`, `.keys()[i]`,
`.values()[i]`, `[...]` for a set's members); the fix is chosen by `Finding.fix_kind`, so a
wrong kind of advice makes the round fail. Deepest paths first, so an object is fixed before
the object holding it is replaced by a dict or a list.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import Any

from pytest_ckpt.audit.nodes import Finding

_STEP = re.compile(
    r"\.keys\(\)\[(?P<key>\d+)\]|\.values\(\)\[(?P<value>\d+)\]|(?P<members>\[\.\.\.\])"
    r"|\[(?P<item>-?\d+|'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\]|\.(?P<attr>[A-Za-z_]\w*)"
)


def _attributes(value: Any) -> dict[str, Any]:
    """An object's attributes as a dict (its fields, for a slotted dataclass), shallow: the
    objects inside are fixed at their own paths."""
    if dataclasses.is_dataclass(value):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return dict(vars(value))


FIXES: dict[str, Callable[[Any], Any]] = {
    "Enum": lambda v: v.value,
    "datetime": lambda v: v.isoformat(),
    "date": lambda v: v.isoformat(),
    "time": lambda v: v.isoformat(),
    "timedelta": lambda v: v.total_seconds(),
    "dataclass": lambda v: _attributes(v),
    "dataclass or object with attributes": lambda v: _attributes(v),
    "argparse.Namespace": lambda v: dict(vars(v)),
    "deque": list,
    "defaultdict": dict,
    "frozenset": lambda v: sorted(v, key=repr),
    "nn.Module": lambda v: v.state_dict(),
    "path": str,
    "float subclass": float,
    "int subclass": int,
}


def parse_path(path: str) -> list[tuple[str, Any]]:
    """`root['a'][0].b` -> [("item", "a"), ("item", 0), ("attr", "b")]; raises ValueError
    on anything outside the documented syntax (a `(args)` pickle-argument step, say)."""
    if not path.startswith("root"):
        raise ValueError(f"path does not start at root: {path}")
    steps, pos = [], len("root")
    while pos < len(path):
        match = _STEP.match(path, pos)
        if match is None:
            raise ValueError(f"undocumented path syntax at {path[pos:]!r} in {path}")
        kind = match.lastgroup
        text = match.group(kind)
        value = ast.literal_eval(text) if kind == "item" else text
        steps.append((kind, int(value) if kind in ("key", "value") else value))
        pos = match.end()
    return steps


def _put(value: Any, steps: list[tuple[str, Any]], fix: Callable[[Any], Any], name: str) -> Any:
    if not steps:
        return fix(value)
    (kind, arg), rest = steps[0], steps[1:]
    if kind in ("key", "members") and not rest:  # must stay hashable: a list as a tuple
        fix = _hashable(fix)
    if kind == "attr":
        setattr(value, arg, _put(getattr(value, arg), rest, fix, name))
        return value
    if kind == "item" and isinstance(value, tuple):
        return tuple(_put(v, rest, fix, name) if i == arg else v for i, v in enumerate(value))
    if kind == "item":
        value[arg] = _put(value[arg], rest, fix, name)
        return value
    if kind == "members":  # every refused member of that class in the set
        fixed = [_put(m, rest, fix, name) if _named(m, name) else m for m in value]
        return type(value)(fixed)
    items = list(value.items())
    key, item = items[arg]
    if kind == "value":
        value[key] = _put(item, rest, fix, name)
        return value
    new_key = _put(key, rest, fix, name)
    value.clear()
    value.update((new_key if i == arg else k, v) for i, (k, v) in enumerate(items))
    return value


def _hashable(fix: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The frozenset advice's "tuple(sorted(s)) where it must stay hashable"."""

    def fixed(value: Any) -> Any:
        result = fix(value)
        return tuple(result) if isinstance(result, list) else result

    return fixed


def _named(obj: Any, name: str) -> bool:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}" == name or name.endswith(f".{cls.__name__}")


def named_paths(findings: Iterable[Finding]) -> list[str]:
    """Every path a report names: each finding's and each of its aliases'."""
    return [p for f in findings for p in (f.path, *f.also_at)]


def apply_fixes(root: Any, findings: Iterable[Finding]) -> Any:
    """`root` with every finding's fix applied at every path it names (the state is
    changed in place where it is mutable); KeyError for a fix kind with no known fix."""
    work = []
    for finding in findings:
        fix = FIXES[finding.fix_kind]
        for path in (finding.path, *finding.also_at):
            work.append((parse_path(path), fix, finding.global_name or ""))
    work.sort(key=lambda item: len(item[0]), reverse=True)
    holder = [root]
    for steps, fix, name in work:
        holder[0] = _put(holder[0], steps, fix, name)
    return holder[0]
