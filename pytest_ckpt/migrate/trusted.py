"""`--trust`: convert a file you wrote yourself by unpickling it for real.

This is the one place in pytest-ckpt that calls `torch.load(..., weights_only=False)`. It
runs code from the file: imports its classes and calls whatever its pickle names. It exists
for legacy files the static converter refuses (a class whose module it cannot find) and
prints a warning every time. Never use it on a file you did not write.

The live objects become the markers the static machine builds (`classify`), and the one
final pass (`migrate.finish`) converts both: the same rules, the same output, the same
refusals. An object is a "dict of its state" only when pickle would write it as one (the
default reduction, `objects.default_state`); anything else is refused, as the static mode
refuses its REDUCE.
"""

from __future__ import annotations

import datetime
import os
import sys
from typing import Any

from pytest_ckpt.errors import ConversionRefused
from pytest_ckpt.migrate import objects, rules
from pytest_ckpt.migrate.finish import Finisher
from pytest_ckpt.migrate.markers import Refused, TzInfo

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
    """The marker the static machine builds for what pickle would write for `value`: the
    first rule that knows it (`rules.live_marker`), else the static mode's refusal."""
    import torch

    if isinstance(value, torch.Tensor):  # Tensor and Parameter are the final pass's leaves
        return Refused(
            f"a tensor subclass {objects.qualified_name(type(value))}; fix: store a plain tensor"
        )
    if type(value) is datetime.timezone:  # a part of a datetime, refused alone
        return TzInfo(value)
    made = rules.live_marker(value)
    if made is None:
        return Refused(_reduce_refusal(value, objects.qualified_name(type(value))))
    return made


def _reduce_refusal(value: Any, name: str) -> str:
    """The static mode's refusal of what pickle writes for `value`: the call it makes."""
    import copyreg

    try:
        reduced = value.__reduce_ex__(2)
    except Exception as err:
        return f"{name} cannot be pickled ({type(err).__name__})"
    if isinstance(reduced, str):
        return objects.refuse_call(f"{value.__module__}.{reduced}")
    func = reduced[0]
    # copyreg.__newobj__ / __newobj_ex__: pickle's protocol-2 reducers, not in typeshed
    if func in (copyreg.__newobj__, copyreg.__newobj_ex__):  # type: ignore[attr-defined]
        return objects.refuse_arguments(name) if len(reduced[1]) > 1 else objects.refuse_state(name)
    func_name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', '?')}"
    return objects.refuse_call(func_name)


def to_primitives(value: Any, path: str = "root", conversions: list[str] | None = None) -> Any:
    """The static converter's output for the live `value`; raises ConversionRefused."""
    finisher = Finisher(classify)
    result = finisher.run(value, path)
    if conversions is not None:
        conversions.extend(finisher.conversions)
    if finisher.refusals:
        raise ConversionRefused(finisher.refusals)
    return result
