"""How two values with one key differ: tensors element by element within rtol/atol, in
chunks (memory stays flat whatever the tensor's size), other values by value.

An element differs when |a - b| > atol + rtol * |b| (torch.isclose's rule); NaN equals NaN
at the same place, and infinities equal themselves. The default tolerance is zero: exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CHUNK_ELEMENTS = 1 << 20


@dataclass(slots=True, frozen=True)
class TensorDifference:
    """`beyond`: elements outside the tolerance; `max_abs`: the largest |a - b| (NaN when one
    side is NaN where the other is not; None where no difference is defined)."""

    beyond: int
    max_abs: float | None


def _wide(dtype: Any) -> Any:
    """The dtype differences are computed in: exact for every value of `dtype`."""
    import torch

    if dtype.is_complex:
        return torch.complex128
    if dtype in (torch.float64, torch.int64, torch.uint64, torch.uint32, torch.int32):
        return torch.float64
    return torch.float32


def tensor_difference(a: Any, b: Any, *, rtol: float, atol: float) -> TensorDifference:
    """Compare two tensors of one shape and dtype, `CHUNK_ELEMENTS` at a time."""
    import torch

    if a.layout != torch.strided or a.is_quantized or a.is_nested or a.device.type == "meta":
        return TensorDifference(0 if torch.equal(a, b) else a.numel(), None)
    if a.dtype == torch.bool:
        beyond = int(torch.count_nonzero(a != b))
        return TensorDifference(beyond, float(beyond > 0))
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    wide = _wide(a.dtype)
    beyond, max_abs = 0, 0.0
    for start in range(0, flat_a.numel(), CHUNK_ELEMENTS):
        x = flat_a[start : start + CHUNK_ELEMENTS]
        y = flat_b[start : start + CHUNK_ELEMENTS]
        if torch.equal(x, y):  # the common case, and never true where a NaN is
            continue
        x, y = x.to(wide), y.to(wide)
        chunk_beyond, chunk_max = _fast_chunk(x, y, rtol, atol)
        if chunk_max != chunk_max or chunk_max == math.inf:  # NaN or inf inside: exact rules
            chunk_beyond, chunk_max = _exact_chunk(x, y, rtol, atol)
        beyond += chunk_beyond
        if chunk_max != chunk_max or chunk_max > max_abs:  # NaN sticks once seen
            max_abs = chunk_max
    return TensorDifference(beyond, max_abs)


def _distance(x: Any, y: Any) -> Any:
    import torch

    difference = torch.sub(x, y)
    return difference.abs() if difference.is_complex() else difference.abs_()


def _fast_chunk(x: Any, y: Any, rtol: float, atol: float) -> tuple[int, float]:
    """Four passes: right whenever every |x - y| is finite (the caller checks the max)."""
    import torch

    distance = _distance(x, y)
    tolerance = atol if rtol == 0 else y.abs().mul_(rtol).add_(atol)
    outside = distance > tolerance
    return int(torch.count_nonzero(outside)), float(distance.max())


def _exact_chunk(x: Any, y: Any, rtol: float, atol: float) -> tuple[int, float]:
    """torch.isclose's rule with NaN equal to NaN; no distance where the values are equal
    (inf == inf, not inf - inf = NaN)."""
    import torch

    distance = _distance(x, y)
    outside = ~torch.isclose(x, y, rtol=rtol, atol=atol, equal_nan=True)
    distance.masked_fill_((x == y) | (torch.isnan(x) & torch.isnan(y)), 0)
    return int(torch.count_nonzero(outside)), float(distance.max())


def values_equal(a: Any, b: Any) -> bool:
    """Non-tensor values: equal when of one type and ==, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):  # a container holding tensors
        return repr(a) == repr(b)
