"""Exact comparison of nested checkpoint state, with differences a person can read.

Tensors are equal when dtype, shape and every element are the same (NaN equals NaN in the
same place, since a restored NaN is still a faithful restore). Containers are compared by
type, keys and order. Each difference carries its path from the root.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, frozen=True)
class Difference:
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}"


def tensors_equal(a: Any, b: Any) -> bool:
    import torch

    if a.dtype != b.dtype or a.shape != b.shape or a.layout != b.layout:
        return False
    if a.layout != torch.strided:
        return torch.equal(a.to_dense(), b.to_dense())
    a, b = a.detach().cpu(), b.detach().cpu()
    if torch.equal(a, b):
        return True
    if a.is_floating_point() or a.is_complex():
        return bool(((a == b) | (a.isnan() & b.isnan())).all())
    return False


def _describe_tensor_difference(a: Any, b: Any) -> str:
    if a.dtype != b.dtype:
        return f"dtype {a.dtype} != {b.dtype}"
    if a.shape != b.shape:
        return f"shape {list(a.shape)} != {list(b.shape)}"
    if a.layout != b.layout:
        return f"layout {a.layout} != {b.layout}"
    a, b = a.detach().cpu(), b.detach().cpu()
    differing = int((a != b).sum())
    detail = f"{differing} of {a.numel()} elements differ"
    if a.is_floating_point():
        detail += f" (max abs diff {float((a.double() - b.double()).abs().max()):.3g})"
    return detail


def diff_values(
    expected: Any, actual: Any, *, root: str = "root", limit: int = 20
) -> list[Difference]:
    """Differences between two nested values, at most `limit` of them, in traversal order."""
    import torch

    differences: list[Difference] = []
    stack: list[tuple[str, Any, Any]] = [(root, expected, actual)]
    while stack and len(differences) < limit:
        path, a, b = stack.pop()
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
                differences.append(Difference(path, f"{_kind(a)} != {_kind(b)}"))
            elif not tensors_equal(a, b):
                differences.append(Difference(path, _describe_tensor_difference(a, b)))
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            missing = [k for k in a if k not in b]
            extra = [k for k in b if k not in a]
            if missing:
                differences.append(Difference(path, f"keys missing after: {missing!r}"))
            if extra:
                differences.append(Difference(path, f"unexpected keys: {extra!r}"))
            shared = [k for k in a if k in b]
            stack.extend(reversed([(f"{path}[{k!r}]", a[k], b[k]) for k in shared]))
            continue
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            if type(a) is not type(b):
                differences.append(Difference(path, f"{_kind(a)} != {_kind(b)}"))
            elif len(a) != len(b):
                differences.append(Difference(path, f"length {len(a)} != {len(b)}"))
            else:
                stack.extend(
                    reversed(
                        [(f"{path}[{i}]", x, y) for i, (x, y) in enumerate(zip(a, b, strict=True))]
                    )
                )
            continue
        if type(a) is not type(b):
            differences.append(Difference(path, f"{_kind(a)} {a!r:.40} != {_kind(b)} {b!r:.40}"))
        elif a != b and not (isinstance(a, float) and a != a and b != b):
            differences.append(Difference(path, _describe_value_difference(a, b)))
    return differences


_SHOWN_CHARS = 60


def _describe_value_difference(a: Any, b: Any) -> str:
    """Both values; for long strings (or bytes) a window around the first difference, since
    two long values often share a prefix longer than anything we could print."""
    if not isinstance(a, (str, bytes)) or max(len(a), len(b)) <= _SHOWN_CHARS:
        return f"{a!r:.{_SHOWN_CHARS}} != {b!r:.{_SHOWN_CHARS}}"
    first = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    start, width = max(0, first - 20), _SHOWN_CHARS - 20

    def window(value: Any) -> str:
        part = value[start : start + width]
        return ("..." if start else "") + repr(part) + ("..." if len(value) > start + width else "")

    return f"differ from index {first} (lengths {len(a)} and {len(b)}): {window(a)} != {window(b)}"


def _kind(value: Any) -> str:
    return type(value).__name__
