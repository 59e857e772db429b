"""Tensor-aware syrupy snapshots: reviewed in a PR diff like any other snapshot.

A tensor becomes one line: shape, dtype, a sha256 digest of its exact bytes and a short
rounded summary a reviewer can read. Long lists of numbers (an RNG state) become a digest line
too. Floats elsewhere are rounded to `FLOAT_DIGITS` significant digits.

When are float digests exact? For the same torch build on the CPU, with every RNG seeded and
the same thread count, a trained float tensor is bit-identical run to run, so its digest is
stable. Across torch versions, CPUs or thread counts it may not be: use the "rounded" mode
(`--ckpt-snapshot-floats rounded`), which drops float digests, keeps the rounded summary and
writes plain floats at SUMMARY_DIGITS significant digits.
Integer and bool tensors are always compared exactly.

Our snapshots use their own file extension (`.ckpt-ambr`) and serializer version, so they
never share a file or a version header with a project's plain `snapshot` assertions.
"""

from __future__ import annotations

import ctypes
import hashlib
import numbers
from typing import Any, ClassVar

from syrupy.extensions.amber import (
    AmberDataSerializer,
    AmberDataSerializerPlugin,
    AmberSnapshotExtension,
)

FLOAT_DIGITS = 6
SUMMARY_DIGITS = 4
FLOAT_MODES = ("exact", "rounded")
_LONG_LIST = 16
_SHOWN_VALUES = 8


def tensor_digest(tensor: Any) -> str:
    """sha256 of a strided tensor's exact bytes (contiguous CPU copy), first 16 hex digits."""
    data = tensor.detach().cpu().contiguous()
    nbytes = data.numel() * data.element_size()
    raw = ctypes.string_at(data.data_ptr(), nbytes) if nbytes else b""
    return hashlib.sha256(raw).hexdigest()[:16]


def _g(value: float, digits: int = SUMMARY_DIGITS) -> str:
    return f"{value:.{digits}g}"


def describe_tensor(tensor: Any, *, float_mode: str) -> str:
    """The one-line text of a tensor in a snapshot."""
    import torch

    head = f"shape={list(tensor.shape)}, dtype={str(tensor.dtype).removeprefix('torch.')}"
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_nested:
        kind = "quantized" if tensor.is_quantized else str(tensor.layout).removeprefix("torch.")
        return f"Tensor({head}, layout={kind}, not digested)"
    if tensor.device.type == "meta":
        return f"Tensor({head}, device=meta, no data)"
    data = tensor.detach().cpu()
    exact = not (data.is_floating_point() or data.is_complex()) or float_mode == "exact"
    parts = [head]
    if exact:
        parts.append(f"sha256={tensor_digest(data)}")
    if data.numel() == 0:
        parts.append("empty")
    elif data.dtype == torch.bool or not (data.is_floating_point() or data.is_complex()):
        flat = data.flatten()
        if flat.numel() <= _SHOWN_VALUES:
            parts.append(f"values={flat.tolist()}")
        else:
            numeric = flat.to(torch.int64)
            parts.append(f"min={int(numeric.min())}, max={int(numeric.max())}")
    elif data.is_complex():
        parts.append(f"abs_mean={_g(float(data.abs().double().mean()))}")
    else:
        values = data.double()
        finite = values[values.isfinite()]
        non_finite = values.numel() - finite.numel()
        if finite.numel():
            std = float(finite.std()) if finite.numel() > 1 else 0.0
            parts.append(
                f"mean={_g(float(finite.mean()))}, std={_g(std)}, "
                f"min={_g(float(finite.min()))}, max={_g(float(finite.max()))}"
            )
        if non_finite:
            parts.append(f"non_finite={non_finite}")
    return f"Tensor({', '.join(parts)})"


def format_float(value: float, digits: int = FLOAT_DIGITS) -> str:
    """Floats at `digits` significant digits; whole numbers (counters, clock readings) exact."""
    if value.is_integer() and abs(value) < 1e15:
        return repr(value)
    return _g(value, digits)


def _is_long_number_list(data: Any) -> bool:
    return (
        isinstance(data, (list, tuple))
        and len(data) > _LONG_LIST
        and all(isinstance(v, numbers.Real) for v in data)
    )


def make_snapshot_extension(float_mode: str = "exact") -> type[AmberSnapshotExtension]:
    """The extension class for one session's float mode (built once per session)."""
    if float_mode not in FLOAT_MODES:
        raise ValueError(f"unknown float mode {float_mode!r}; expected one of {FLOAT_MODES}")

    class TensorPlugin(AmberDataSerializerPlugin):
        mode: ClassVar[str] = float_mode

        @classmethod
        def is_data_serializable(cls, data: Any) -> bool:
            import torch

            return isinstance(data, torch.Tensor) or _is_long_number_list(data)

        @classmethod
        def serialize(cls, data: Any, *, depth: int = 0, **kwargs: Any) -> str:
            import torch

            if isinstance(data, torch.Tensor):
                text = describe_tensor(data, float_mode=cls.mode)
            else:
                text = describe_tensor(
                    torch.tensor([float(v) for v in data], dtype=torch.float64), float_mode="exact"
                )
                text = text.replace("Tensor(", f"{type(data).__name__}(len={len(data)}, ", 1)
            return AmberDataSerializer.with_indent(text, depth)

    class CkptAmberSerializer(AmberDataSerializer):
        VERSION = f"ckpt-1-{float_mode}"
        serializer_plugins = (TensorPlugin,)

        @classmethod
        def serialize_number(cls, data: Any, *, depth: int = 0, **kwargs: Any) -> str:
            if isinstance(data, float):
                digits = FLOAT_DIGITS if float_mode == "exact" else SUMMARY_DIGITS
                return cls.with_indent(format_float(data, digits), depth)
            return super().serialize_number(data, depth=depth, **kwargs)

    class CkptSnapshotExtension(AmberSnapshotExtension):
        # One dot only: syrupy matches a snapshot file to its test by the file's stem.
        file_extension = "ckpt-ambr"
        serializer_class = CkptAmberSerializer

    return CkptSnapshotExtension
