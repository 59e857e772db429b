"""Values as one-line snapshot text that means the same on every CPU (see `plugin.snapshot`).

A tensor: shape, dtype and a sha256 of its bytes (integers) or well-conditioned summaries
(floats: L2 norm and abs-max, or the values when there are a handful). A long list of numbers
(an RNG state) likewise; a small container of primitives goes on one line. A value at an
`unchecked` path keeps its type only (`masked`).
"""

from __future__ import annotations

import ctypes
import hashlib
import numbers
from collections.abc import Sequence
from typing import Any

from pytest_ckpt.plugin.snapshot_compare import Tolerance

FLOAT_MODES = ("exact", "tolerant")
FLOAT_DIGITS = 8
# Kernels for another SIMD width or accumulation order change a float32 result by a few units
# in the last place (~1e-7 relative) per operation; after a short, well-conditioned training
# run (a few optimizer steps) that stays below ~1e-4. rtol=1e-3 leaves a 10x margin and still
# fails a 1% change; atol=1e-6 absorbs the cancellation noise of float32 sums of order-1 terms
# around zero (a loss of 3e-8 on one CPU is -3e-8 on another).
DEFAULT_TOLERANCE = Tolerance(rtol=1e-3, atol=1e-6)
_LONG_LIST = 16
_SHOWN_VALUES = 8
_FLOW_LEAVES = 16
_FLOW_DEPTH = 3
_FLOW_TEXT = 120
UNCHECKED_FLOAT = "<float>"  # a float at an unchecked path: its type is pinned, not its value


def masked(value: Any) -> str:
    """A value at an `unchecked` path: its type only (`<float>`, `<str>`, `<datetime>`)."""
    return f"<{type(value).__name__}>"


def dotted_path(path: Sequence[tuple[Any, Any]]) -> str:
    """syrupy's property path as the dotted path tolerance rules match (`state.env.loss`)."""
    return ".".join(str(name) for name, _type in path)


def tensor_digest(tensor: Any) -> str:
    """sha256 of a strided tensor's exact bytes (contiguous CPU copy), first 16 hex digits."""
    data = tensor.detach().cpu().contiguous()
    nbytes = data.numel() * data.element_size()
    raw = ctypes.string_at(data.data_ptr(), nbytes) if nbytes else b""
    return hashlib.sha256(raw).hexdigest()[:16]


def format_float(value: float, *, float_mode: str = "tolerant") -> str:
    """A float as snapshot text: always recognisable as a float (`16.0`, never `16`).

    Whole numbers below 1e15 (counters, clock readings) are written exactly; in "exact" mode
    every float is its full repr, otherwise `FLOAT_DIGITS` significant digits.
    """
    value = float(value)
    if float_mode == "exact" or (value.is_integer() and abs(value) < 1e15):
        return repr(value)
    text = f"{value:.{FLOAT_DIGITS}g}"
    return text if any(c in text for c in ".en") else f"{text}.0"


def _float_summary(values: Any, float_mode: str) -> list[str]:
    """norm and abs-max over the finite values, in float64 (or the values, if few)."""
    import torch

    flat = values.flatten()
    if flat.numel() <= _SHOWN_VALUES:
        return ["values=[" + ", ".join(format_float(v, float_mode=float_mode) for v in flat) + "]"]
    finite = flat[flat.isfinite()]
    parts = []
    if finite.numel():
        norm = float(torch.linalg.vector_norm(finite))
        absmax = float(finite.abs().max())
        parts.append(
            f"norm={format_float(norm, float_mode=float_mode)}, "
            f"absmax={format_float(absmax, float_mode=float_mode)}"
        )
    if finite.numel() != flat.numel():
        parts.append(f"nonfinite={flat.numel() - finite.numel()}")
    return parts


def describe_tensor(tensor: Any, *, float_mode: str = "tolerant", checked: bool = True) -> str:
    """The one-line text of a tensor in a snapshot; `checked=False` leaves its values out
    (a path whose values differ from machine to machine: shape and dtype only)."""
    import torch

    head = f"shape={list(tensor.shape)}, dtype={str(tensor.dtype).removeprefix('torch.')}"
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_nested:
        kind = "quantized" if tensor.is_quantized else str(tensor.layout).removeprefix("torch.")
        return f"Tensor({head}, layout={kind}, not digested)"
    if tensor.device.type == "meta":
        return f"Tensor({head}, device=meta, no data)"
    data = tensor.detach().cpu()
    floating = data.is_floating_point() or data.is_complex()
    if not checked:
        return f"Tensor({head})"
    parts = [head]
    if not floating or float_mode == "exact":
        parts.append(f"sha256='{tensor_digest(data)}'")
    if data.numel() == 0:
        parts.append("empty")
    elif not floating:
        flat = data.flatten()
        if flat.numel() <= _SHOWN_VALUES:
            parts.append(f"values={flat.tolist()}")
        else:
            numeric = flat.to(torch.int64)
            parts.append(f"min={int(numeric.min())}, max={int(numeric.max())}")
    elif data.is_complex():
        parts += _float_summary(data.abs().double(), float_mode)
    else:
        parts += _float_summary(data.double(), float_mode)
    return f"Tensor({', '.join(parts)})"


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real)


def describe_number_list(
    data: Sequence[Any], *, float_mode: str = "tolerant", checked: bool = True
) -> str:
    """A long list of numbers (an RNG state) as one line. Integers are digested from their
    exact decimal text, so values beyond 2**53 or 2**63 are never rounded together."""
    import torch

    kind = type(data).__name__
    if all(isinstance(v, numbers.Integral) for v in data) and checked:
        text = ",".join(str(int(v)) for v in data)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        ints = [int(v) for v in data]
        return f"{kind}(len={len(data)}, sha256='{digest}', min={min(ints)}, max={max(ints)})"
    values = torch.tensor([float(v) for v in data], dtype=torch.float64)
    described = describe_tensor(values, float_mode=float_mode, checked=checked)
    return described.replace("Tensor(shape=", f"{kind}(len={len(data)}, shape=", 1)


def _is_long_number_list(data: Any) -> bool:
    return (
        isinstance(data, (list, tuple))
        and len(data) > _LONG_LIST
        and all(_is_number(v) for v in data)
    )


def _is_primitive(value: Any) -> bool:
    return value is None or type(value) in (bool, int, float, str)


def _flow_leaves(data: Any, depth: int) -> int | None:
    """How many primitives a container holds, if it can go on one line (else None)."""
    if _is_primitive(data):
        return 1
    if depth == 0 or type(data) not in (list, tuple, dict) or not data:
        return None
    if isinstance(data, dict) and not all(type(k) is str for k in data):
        return None
    total = 0
    for value in data.values() if isinstance(data, dict) else data:
        leaves = _flow_leaves(value, depth - 1)
        if leaves is None:
            return None
        total += leaves
    return total


def _strings_length(data: Any) -> int:
    if isinstance(data, str):
        return len(data)
    if isinstance(data, dict):
        return sum(len(k) + _strings_length(v) for k, v in data.items())
    if isinstance(data, (list, tuple)):
        return sum(_strings_length(v) for v in data)
    return 0


def _is_flow_container(data: Any) -> bool:
    """Small lists, tuples and dicts of primitives (nested up to `_FLOW_DEPTH`) go on one line,
    so a PR diff stays short; each float in it keeps its own path (`...payload.reward`) for
    tolerance rules.

    The decision depends on the structure and the length of the strings only, never on how a
    float is written, so a value within tolerance never changes the layout."""
    if type(data) not in (list, tuple, dict):
        return False
    leaves = _flow_leaves(data, _FLOW_DEPTH)
    return leaves is not None and leaves <= _FLOW_LEAVES and _strings_length(data) <= _FLOW_TEXT
