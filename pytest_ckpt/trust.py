"""`--trust`: convert a file you wrote yourself by unpickling it for real.

This is the one place in pytest-ckpt that calls `torch.load(..., weights_only=False)`. It
runs code from the file: imports its classes and calls whatever its pickle names. It exists
for legacy files the static converter refuses (a custom `__reduce__`, a class it cannot
read) and prints a warning every time. Never use it on a file you did not write.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import os
import pathlib
import sys
from typing import Any

WARNING = (
    "WARNING: --trust unpickles {path} with weights_only=False: this RUNS CODE FROM THE FILE. "
    "Use it only on checkpoints you wrote yourself."
)


def load_trusted(path: str | os.PathLike[str]) -> Any:
    import torch

    print(WARNING.format(path=path), file=sys.stderr)
    return torch.load(path, weights_only=False, map_location="cpu")  # the documented exception


def _object_state(obj: Any) -> dict[str, Any]:
    """The state pickle would BUILD the object from (so --trust matches the static path)."""
    reduced = obj.__reduce_ex__(2)
    state = reduced[2] if len(reduced) > 2 else None
    if isinstance(state, tuple) and len(state) == 2:
        return {**(state[0] or {}), **(state[1] or {})}
    return dict(state or {})


def _module(module: Any) -> dict[str, Any]:
    tensors: dict[str, Any] = {}

    def collect(current: Any, prefix: str) -> None:
        for group in (current._parameters, current._buffers):
            for name, tensor in group.items():
                if tensor is not None:
                    tensors[prefix + name] = tensor
        for name, child in current._modules.items():
            if child is not None:
                collect(child, f"{prefix}{name}.")

    collect(module, "")
    config = {
        key: value
        for key, value in vars(module).items()
        if not key.startswith("_") and isinstance(value, (int, float, str, bool, type(None)))
    }
    cls = type(module)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "config": config,
        "state_dict": tensors,
    }


def to_primitives(value: Any, path: str, conversions: list[str]) -> Any:
    """The same conversions as the static converter, applied to real objects."""
    import torch

    if isinstance(value, enum.Enum):  # before the primitives: an IntEnum is an int
        conversions.append(f"{path}: {type(value).__name__} member -> its value")
        return value.value
    if isinstance(value, (torch.Tensor, str, bytes, int, float, bool, complex, type(None))):
        return value
    if isinstance(value, (torch.dtype, torch.device, torch.layout, torch.memory_format)):
        return value
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        conversions.append(f"{path}: {type(value).__name__} -> ISO string")
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        conversions.append(f"{path}: timedelta -> seconds")
        return value.total_seconds()
    if isinstance(value, pathlib.PurePath):
        conversions.append(f"{path}: path -> str")
        return str(value)
    if isinstance(value, torch.nn.Module):
        conversions.append(f"{path}: module -> state_dict + config")
        return _module(value)
    if isinstance(value, (collections.deque, set, frozenset)):
        conversions.append(f"{path}: {type(value).__name__} -> list")
        return [to_primitives(v, f"{path}[{i}]", conversions) for i, v in enumerate(value)]
    if isinstance(value, collections.OrderedDict):
        result = collections.OrderedDict(
            (k, to_primitives(v, f"{path}[{k!r}]", conversions)) for k, v in value.items()
        )
        if hasattr(value, "_metadata"):
            result._metadata = value._metadata  # type: ignore[attr-defined]
        return result
    if isinstance(value, dict):
        if type(value) is not dict:
            conversions.append(f"{path}: {type(value).__name__} -> dict")
        return {k: to_primitives(v, f"{path}[{k!r}]", conversions) for k, v in value.items()}
    if isinstance(value, list):
        return [to_primitives(v, f"{path}[{i}]", conversions) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(to_primitives(v, f"{path}[{i}]", conversions) for i, v in enumerate(value))
    if dataclasses.is_dataclass(value) or hasattr(value, "__reduce_ex__"):
        conversions.append(f"{path}: {type(value).__qualname__} object -> dict of its state")
        state = _object_state(value)
        return {k: to_primitives(v, f"{path}.{k}", conversions) for k, v in state.items()}
    return value
