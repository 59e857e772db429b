"""`--trust`: convert a file you wrote yourself by unpickling it for real.

This is the one place in pytest-ckpt that calls `torch.load(..., weights_only=False)`. It
runs code from the file: imports its classes and calls whatever its pickle names. It exists
for legacy files the static converter refuses (a class whose module it cannot find) and
prints a warning every time. Never use it on a file you did not write.

The live objects become the markers the static machine builds (`classify`), and the one
final pass (`migrate.finish`) converts both: the same rules, the same output, the same
refusals. An object is a "dict of its state" only when pickle would write it as one (the
default reduction, `rules.default_state`); anything else is refused, as the static mode
refuses its REDUCE.
"""

from __future__ import annotations

import collections
import datetime
import enum
import os
import pathlib
import sys
from typing import Any

from pytest_ckpt.errors import ConversionRefused
from pytest_ckpt.migrate import rules
from pytest_ckpt.migrate.finish import Finisher
from pytest_ckpt.migrate.markers import (
    Converted,
    DefaultDict,
    DequeList,
    EnumValue,
    ObjectRecord,
    Refused,
    SetList,
    TzInfo,
    new_object,
)

WARNING = (
    "WARNING: --trust unpickles {path} with weights_only=False: this RUNS CODE FROM THE FILE. "
    "Use it only on checkpoints you wrote yourself."
)
_AS_ISO = (datetime.datetime, datetime.date, datetime.time)


def load_trusted(path: str | os.PathLike[str]) -> Any:
    import torch

    print(WARNING.format(path=path), file=sys.stderr)
    return torch.load(path, weights_only=False, map_location="cpu")  # the documented exception


def classify(value: Any) -> Any:
    """The marker the static machine builds for what pickle would write for `value`."""
    import torch

    cls = type(value)
    name = rules.qualified_name(cls)
    if isinstance(value, enum.Enum):
        if type(value.value) not in (int, float, str, bool, type(None), bytes):
            return Refused(rules.refuse_call(name))  # pickled with a value it cannot convert
        return EnumValue(name, value.value)
    if isinstance(value, torch.Tensor):  # Tensor and Parameter are the final pass's leaves
        return Refused(f"a tensor subclass {name}; fix: store a plain tensor")
    if cls in _AS_ISO:
        return Converted(value.isoformat(), rules.rule_for_global(name).note(name))
    if cls is datetime.timedelta:
        return Converted(value, rules.TIMEDELTA.note(name))
    if isinstance(value, datetime.tzinfo) and cls is datetime.timezone:
        return TzInfo(value)
    if isinstance(value, pathlib.PurePath):
        return Converted(str(value), rules.PATH.note(name))
    if cls is collections.deque:
        return DequeList(value)
    if cls is collections.defaultdict:
        return DefaultDict(value)
    if cls is frozenset:
        return SetList(value)
    state = rules.default_state(value)
    if state is None:
        return Refused(_reduce_refusal(value, name))
    made = new_object(name)
    if isinstance(made, ObjectRecord):
        made.state.update(state)
    return made


def _reduce_refusal(value: Any, name: str) -> str:
    """The static mode's refusal of what pickle writes for `value`: the call it makes."""
    import copyreg

    try:
        reduced = value.__reduce_ex__(2)
    except Exception as err:
        return f"{name} cannot be pickled ({type(err).__name__})"
    if isinstance(reduced, str):
        return rules.refuse_call(f"{value.__module__}.{reduced}")
    func = reduced[0]
    if func in (copyreg.__newobj__, copyreg.__newobj_ex__):
        return rules.refuse_arguments(name) if len(reduced[1]) > 1 else rules.refuse_state(name)
    func_name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', '?')}"
    return rules.refuse_call(func_name)


def to_primitives(value: Any, path: str = "root", conversions: list[str] | None = None) -> Any:
    """The static converter's output for the live `value`; raises ConversionRefused."""
    finisher = Finisher(classify)
    result = finisher.run(value, path)
    if conversions is not None:
        conversions.extend(finisher.conversions)
    if finisher.refusals:
        raise ConversionRefused(finisher.refusals)
    return result
