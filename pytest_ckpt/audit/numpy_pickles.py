"""What numpy's pickle helpers build, by name, so that an allow-listed numpy array or scalar
gets torch's verdict.

A numpy array pickles as `_reconstruct(ndarray, (0,), b'b')` then BUILD with a state that
holds `numpy.dtype('u4', False, True)`, itself BUILT. torch builds only instances of
allow-listed classes, and the dtype instance is of a concrete class (`numpy.dtypes.
UInt32DType`) that the file never names: allow-listing `_reconstruct`, `ndarray` and
`dtype` alone is not enough. The concrete class is read from numpy itself, for a fixed list
of dtype codes (never a string from the file), and only once an allow-listed `numpy.dtype`
call is seen, so that auditing a file without numpy never imports it.
"""

from __future__ import annotations

from functools import lru_cache

# numpy helpers that only rebuild arrays and scalars from data: safe to allow-list (torch's
# documentation names them), unlike any other function.
REBUILDERS = frozenset(
    {
        f"{module}.{name}"
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    }
)
_DTYPE = "numpy.dtype"
# Codes numpy writes as a dtype's first argument (kind + item size; S/U sizes vary).
_CODES = (
    "b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "f12", "f16",
    "c8", "c16", "c24", "c32", "M8", "m8",
)  # fmt: skip
_SIZED = {"S": "S1", "U": "U1"}  # kinds whose class does not depend on the size


@lru_cache(maxsize=1)
def _dtype_classes() -> dict[str, str]:
    try:
        import numpy as np
    except ImportError:
        return {}
    classes = {}
    for code in (*_CODES, *_SIZED.values()):
        try:
            cls = type(np.dtype(code))
        except TypeError:  # a code this platform lacks (f12 on 64-bit)
            continue
        classes[code] = f"{cls.__module__}.{cls.__qualname__}"
    return classes


def dtype_class(code: str) -> str | None:
    """The dotted name of the class of `numpy.dtype(code)`, or None if unknown."""
    kind = code[:1]
    if kind in _SIZED and code[1:].isdigit():
        code = _SIZED[kind]
    return _dtype_classes().get(code)


def reduce_result(func: str, first_arg: object) -> str | None:
    """The type name REDUCE(func, (first_arg, ...)) builds, when it is one of numpy's and
    knowable: `_reconstruct`'s subtype, a dtype's concrete class; "?" for a dtype we cannot
    name; None for anything else (not numpy's)."""
    if func == _DTYPE:
        preview = getattr(first_arg, "preview", None)
        found = dtype_class(preview) if isinstance(preview, str) else None
        return found or "?"
    if func.endswith("._reconstruct") and func in REBUILDERS:
        name = getattr(first_arg, "name", None)
        return name if isinstance(name, str) else "?"
    return None
