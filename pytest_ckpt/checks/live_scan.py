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


@dataclass(slots=True, frozen=True)
class UnsafeObject:
    path: str
    type_name: str
    fix: Fix

    def describe(self) -> str:
        article = "an" if self.fix.kind[:1].lower() in "aeiou" else "a"
        return f"{self.path} is {self.type_name} ({article} {self.fix.kind}): {self.fix.advice}"


def _torch_safe_types() -> frozenset[type]:
    import torch

    types = {torch.Tensor, torch.nn.Parameter, torch.Size, torch.dtype, torch.device}
    types.update({type(torch.contiguous_format), type(torch.strided)})
    return frozenset(types)


def find_unsafe_objects(value: Any, *, root: str = "root", limit: int = 50) -> list[UnsafeObject]:
    """Every object under `value` that weights_only=True would refuse, first `limit` of them,
    including those inside a refused object (a dataclass holding an Enum, a datetime and a
    deque of Enums is four findings, as the static audit of the saved file finds them):
    fixing the outer one alone (`to_dict()`) would still leave the inner ones.

    Iterative, so deep nesting cannot exhaust the recursion limit; shared objects are visited
    once.
    """
    safe_torch = _torch_safe_types()
    found: list[UnsafeObject] = []
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [(root, value)]
    while stack and len(found) < limit:
        path, item = stack.pop()
        kind = type(item)
        if kind in _SAFE_LEAVES:
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        if kind in safe_torch or _is_plain_tensor(item, safe_torch):
            continue
        if kind in _SAFE_CONTAINERS:
            if isinstance(item, dict):
                children = [(f"{path}[{k!r}]", v) for k, v in item.items()]
                children += [(f"{path}.keys()", k) for k in item if type(k) not in _SAFE_LEAVES]
            else:
                children = [(f"{path}[{i}]", v) for i, v in enumerate(item)]
            stack.extend(reversed(children))
            continue
        fix = fix_for_type(kind)
        found.append(UnsafeObject(path, f"{kind.__module__}.{kind.__qualname__}", fix))
        if fix.kind in _KEEPS_CONTENTS:
            stack.extend(reversed(_contents(item, path)))
    return found


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


def _contents(item: Any, path: str) -> list[tuple[str, Any]]:
    """What pickling `item` would save with it, with paths: items of a container, entries of
    a mapping, attributes of an object (its `__reduce_ex__` state)."""
    if isinstance(item, dict):
        return [(f"{path}[{k!r}]", v) for k, v in item.items()]
    if isinstance(item, (list, tuple, set, frozenset, collections.deque)):
        values = sorted(item, key=repr) if isinstance(item, (set, frozenset)) else item
        return [(f"{path}[{i}]", v) for i, v in enumerate(values)]
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
        return [(f"{path}.{k}", v) for k, v in state.items()]
    return [(f"{path}.__getstate__()", state)] if state is not None else []


def _is_plain_tensor(item: Any, safe_torch: frozenset[type]) -> bool:
    """Tensor subclasses other than Parameter pickle under their own class: refused."""
    import torch

    return isinstance(item, torch.Tensor) and type(item) in safe_torch
