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
    """Every object under `value` that weights_only=True would refuse, first `limit` of them.

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
        found.append(
            UnsafeObject(path, f"{kind.__module__}.{kind.__qualname__}", fix_for_type(kind))
        )
    return found


def _is_plain_tensor(item: Any, safe_torch: frozenset[type]) -> bool:
    """Tensor subclasses other than Parameter pickle under their own class: refused."""
    import torch

    return isinstance(item, torch.Tensor) and type(item) in safe_torch
