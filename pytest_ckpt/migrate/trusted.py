"""`--trust`: convert a file you wrote yourself by unpickling it for real.

This is the one place in pytest-ckpt that calls `torch.load(..., weights_only=False)`. It
runs code from the file: imports its classes and calls whatever its pickle names. It exists
for legacy files the static converter refuses (a custom `__reduce__`, a class it cannot
read) and prints a warning every time. Never use it on a file you did not write.

The conversions are the rules of `migrate.rules`, applied to the live objects, so the output
is the static mode's.
"""

from __future__ import annotations

import collections
import os
import sys
from typing import Any

from pytest_ckpt.migrate import rules

WARNING = (
    "WARNING: --trust unpickles {path} with weights_only=False: this RUNS CODE FROM THE FILE. "
    "Use it only on checkpoints you wrote yourself."
)

# replaced by what their `convert` gives
_CONVERTED = (rules.DATETIME, rules.DATE, rules.TIME, rules.TIMEDELTA, rules.PATH, rules.MODULE)
_AS_LISTS = (rules.DEQUE, rules.SET, rules.FROZENSET)  # written as lists of converted items


def load_trusted(path: str | os.PathLike[str]) -> Any:
    import torch

    print(WARNING.format(path=path), file=sys.stderr)
    return torch.load(path, weights_only=False, map_location="cpu")  # the documented exception


def _object_state(obj: Any) -> dict[str, Any]:
    """The state pickle would BUILD the object from (so --trust matches the static path)."""
    reduced = obj.__reduce_ex__(2)
    state = reduced[2] if len(reduced) > 2 else None
    if isinstance(state, tuple) and len(state) == 2:
        return rules.merged_state(*state)
    return dict(state or {})


def _report(rule: rules.Rule, value: Any, path: str, conversions: list[str]) -> None:
    conversions.append(f"{path}: {rule.note(rule.subject(value))}")


def to_primitives(value: Any, path: str, conversions: list[str]) -> Any:
    """The same conversions as the static converter, applied to real objects."""
    import torch

    if rules.ENUM.live(value):  # before the primitives: an IntEnum is an int
        _report(rules.ENUM, value, path, conversions)
        return rules.ENUM.convert(value)
    if isinstance(value, (torch.Tensor, str, bytes, int, float, bool, complex, type(None))):
        return value
    if isinstance(value, (torch.dtype, torch.device, torch.layout, torch.memory_format)):
        return value
    rule = rules.first_live(_CONVERTED, value)
    if rule is not None:
        _report(rule, value, path, conversions)
        return rule.convert(value)
    rule = rules.first_live(_AS_LISTS, value)
    if rule is not None:
        _report(rule, value, path, conversions)
        return [to_primitives(v, f"{path}[{i}]", conversions) for i, v in enumerate(value)]
    if isinstance(value, collections.OrderedDict):
        result = collections.OrderedDict(
            (k, to_primitives(v, f"{path}[{k!r}]", conversions)) for k, v in value.items()
        )
        if hasattr(value, "_metadata"):
            result._metadata = value._metadata  # type: ignore[attr-defined]
        return result
    if isinstance(value, dict):
        if rules.DEFAULTDICT.live(value):
            _report(rules.DEFAULTDICT, value, path, conversions)
        return {k: to_primitives(v, f"{path}[{k!r}]", conversions) for k, v in value.items()}
    if isinstance(value, list):
        return [to_primitives(v, f"{path}[{i}]", conversions) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(to_primitives(v, f"{path}[{i}]", conversions) for i, v in enumerate(value))
    if rules.OBJECT.live(value):
        _report(rules.OBJECT, value, path, conversions)
        state = _object_state(value)
        return {k: to_primitives(v, f"{path}.{k}", conversions) for k, v in state.items()}
    return value
