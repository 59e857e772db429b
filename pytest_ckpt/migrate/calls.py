"""Torch's allow-listed calls as the static converter makes them: the same functions
torch's weights_only unpickler calls (so a tensor comes back with its conj and neg bits,
requires_grad and subclass, exactly), with two guards torch does not have. Arguments that
hold a marker (something migrate converted) are not passed to torch's functions, and what
a constructor allocates from its arguments alone is bounded by what the file holds.
"""

from __future__ import annotations

import collections
from typing import Any

from pytest_ckpt.migrate.markers import (
    Converted,
    DefaultDict,
    DequeList,
    GlobalRef,
    ObjectRecord,
    Refused,
    SetList,
)

_SIZED_CONSTRUCTORS = "tensortype"  # torch.FloatTensor(n) & co: n elements, uninitialised
_MARKER_TYPES = (GlobalRef, Refused, ObjectRecord, Converted, DequeList, SetList, DefaultDict)


class TorchRefuses(Exception):
    """torch's own rebuild function refuses the file's arguments: torch.load would too."""


def call_allowed(
    name: str, allowed: dict[str, Any], args: tuple, budget: int
) -> tuple[Any, int] | str:
    """Call the allow-listed `name` as torch would: `(value, bytes allocated)`, or why not
    (a refusal). Raises TorchRefuses when torch's function rejects the file's arguments."""
    function = allowed[name]
    resolved = []
    for arg in args:
        if isinstance(arg, GlobalRef) and arg.name in allowed:
            arg = allowed[arg.name]  # a class or function torch would pass
        resolved.append(arg)
    if holds_markers(resolved):
        return f"a call of {name} with arguments migrate would have to convert"
    spent = 0
    allocates = allocation(name, type(function).__name__, resolved)
    if allocates is not None:
        what, spent = allocates
        if spent > budget:
            return (
                f"{what} allocates {spent} bytes that the file does not hold; fix: store "
                f"the tensor's values (torch.save of a tensor, not of a constructor call)"
            )
    try:
        return function(*resolved), spent  # torch's own allowlist: safe by its contract
    except Exception as err:  # torch.load would fail the same way
        raise TorchRefuses(f"{name} refuses its arguments: {one_line(err)}") from None


def holds_markers(args: list[Any]) -> bool:
    """Does a marker hide in `args` (in containers too, visited once each)?"""
    todo, seen = list(args), set()
    while todo:
        item = todo.pop()
        if isinstance(item, _MARKER_TYPES):
            return True
        if type(item) in (list, tuple, set, dict, collections.OrderedDict) and id(item) not in seen:
            seen.add(id(item))
            todo.extend(item.items() if isinstance(item, dict) else item)
    return False


def allocation(name: str, kind: str, args: list[Any]) -> tuple[str, int] | None:
    """What a call of an allow-listed constructor allocates from its arguments alone (not
    from data in the file): `torch.FloatTensor(268435456)` is 1 GiB of uninitialised memory,
    `bytearray(n)` n zero bytes. None when the call allocates no more than its data."""
    import math

    import torch

    if kind == _SIZED_CONSTRUCTORS or name == "torch.Tensor":
        sizes = args[0] if len(args) == 1 and isinstance(args[0], (tuple, torch.Size)) else args
        if sizes and all(type(n) is int for n in sizes):
            legacy = getattr(torch, name.rsplit(".", 1)[1], None)  # torch.FloatTensor, ...
            dtype = getattr(legacy, "dtype", None)
            element = dtype.itemsize if dtype is not None else 8
            count = math.prod(sizes) if all(n >= 0 for n in sizes) else 0
            return f"{name}{tuple(sizes)}", count * element
    if name == "builtins.bytearray" and len(args) == 1 and type(args[0]) is int:
        return f"bytearray({args[0]})", max(args[0], 0)
    return None


def one_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
