"""Where the exported state holds a live value, and exact equality of captured values.

`checks.diagnose` asks, for each piece of live state that differs on resume, whether
`export_state()` holds it at all (by key and value) and so whether the fix is to save it or to
restore it: `ExportIndex` flattens the exported state once to answer that. `same` compares two
captured values exactly (tensors, numpy arrays, containers; NaN equal to NaN).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

from pytest_ckpt.checks.compare import tensors_equal


class ExportIndex:
    """The exported state, flattened once: every value with its path and its own key."""

    def __init__(self, exported: Any) -> None:
        self.entries: list[tuple[str, str, Any]] = []  # (path, key, value), containers too
        stack: list[tuple[str, str, Any]] = [("root", "", exported)]
        while stack and len(self.entries) < 100_000:
            path, key, value = stack.pop()
            self.entries.append((path, key, value))
            children: list[tuple[str, str, Any]] = []
            if isinstance(value, Mapping):
                children = [(f"{path}[{k!r}]", str(k), v) for k, v in value.items()]
            elif isinstance(value, (list, tuple)) and not _numbers(value):
                children = [(f"{path}[{i}]", str(i), v) for i, v in enumerate(value)]
            stack.extend(reversed(children))

    def find_tensor(self, value: Any, name: str, *, by_value: bool) -> str | None:
        """A tensor equal to `value` under a key ending in `name` (or anywhere, `by_value`:
        for values no other tensor shares, like a generator's state)."""
        import torch

        for path, key, other in self.entries:
            if not isinstance(other, torch.Tensor) or not (by_value or key.endswith(name)):
                continue
            if other.shape == value.shape and tensors_equal(other, value):
                return path
        return None

    def find_scalar(self, value: Any, name: str) -> str | None:
        for path, key, other in self.entries:
            if key == name and same(value, other):
                return path
        return None

    def find_key(self, name: str) -> str | None:
        for path, key, _ in self.entries:
            if key == name:
                return path.rsplit("[", 1)[0] if "[" in path else path
        return None

    def find_path(self, name: str) -> str | None:
        """The path of the first value stored under the key `name`, whatever its value."""
        for path, key, _ in self.entries:
            if key == name:
                return path
        return None

    def find_equal(self, value: Any) -> str | None:
        for path, _, other in self.entries:
            if same(value, other):
                return path
        return None


def _numbers(values: list | tuple) -> bool:
    """A long run of plain numbers (an RNG state's words) is a value, not a container."""
    return bool(values) and all(isinstance(v, (int, float)) for v in values)


def same(a: Any, b: Any) -> bool:
    """Exact equality of captured values: tensors and numpy arrays element-wise (NaN equal
    to NaN), containers recursively, floats with NaN equal to NaN."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        both = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
        return both and a.shape == b.shape and tensors_equal(a, b)
    np = sys.modules.get("numpy")
    if np is not None and (isinstance(a, np.ndarray) or isinstance(b, np.ndarray)):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):
        return a is b
