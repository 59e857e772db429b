"""`pytest-ckpt diff A B`: what differs between two checkpoints, with nothing from either run.

    from pytest_ckpt.diff import diff_checkpoints
    result = diff_checkpoints("old.pt", "new.safetensors", atol=1e-6)
    result.equal, result.changed

Either side may be a torch file (zip or legacy), a safetensors file, a sharded safetensors
checkpoint (its `*.safetensors.index.json`, or the folder holding it) or a DCP folder; each
is audited first and refused if it has findings (`sources`). Keys are compared flat (nested
dicts joined with "."), so the same tensors in two formats are equal. Tensors are read one at
a time and compared in chunks (`compare`): memory stays flat in checkpoint size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pytest_ckpt.diff.compare import tensor_difference, values_equal
from pytest_ckpt.diff.sources import DiffRefused, Entry, open_side

__all__ = ["Change", "DiffRefused", "DiffResult", "diff_checkpoints"]


@dataclass(slots=True, frozen=True)
class Change:
    """One key present on both sides that differs. `kind`: "dtype", "shape", "values"
    (tensors: `beyond` elements outside the tolerance, the largest `max_abs`), "type" (a
    tensor on one side only) or "value" (other values: `before`/`after` as repr)."""

    key: str
    kind: str
    before: str
    after: str
    beyond: int | None = None
    elements: int | None = None
    max_abs: float | None = None


@dataclass(slots=True)
class DiffResult:
    a: str
    b: str
    a_format: str
    b_format: str
    rtol: float
    atol: float
    added: list[str] = field(default_factory=list)  # in B only
    removed: list[str] = field(default_factory=list)  # in A only
    changed: list[Change] = field(default_factory=list)
    compared: int = 0

    @property
    def equal(self) -> bool:
        return not (self.added or self.removed or self.changed)


def diff_checkpoints(
    a: str, b: str, *, rtol: float = 0.0, atol: float = 0.0, allow: Iterable[str] = ()
) -> DiffResult:
    """Compare checkpoint `a` with `b`. Raises DiffRefused (a CheckpointError) when either is
    unreadable or refused by its audit, or ValueError for a negative tolerance."""
    if not (rtol >= 0 and atol >= 0):
        raise ValueError(f"rtol and atol must be >= 0, got rtol={rtol}, atol={atol}")
    allow = tuple(allow)
    side_a, side_b = open_side(a, allow), open_side(b, allow)
    result = DiffResult(a, b, side_a.format, side_b.format, rtol, atol)
    result.removed = sorted(set(side_a.entries) - set(side_b.entries))
    result.added = sorted(set(side_b.entries) - set(side_a.entries))
    for key in sorted(set(side_a.entries) & set(side_b.entries)):
        change = _compare(key, side_a.entries[key], side_b.entries[key], rtol, atol)
        result.compared += 1
        if change is not None:
            result.changed.append(change)
    return result


def _compare(key: str, a: Entry, b: Entry, rtol: float, atol: float) -> Change | None:
    """How one key differs, reading each side's value only when it must."""
    if (a.dtype is None) != (b.dtype is None):
        return Change(key, "type", _kind(a), _kind(b))
    if a.dtype is None:
        before, after = a.read(), b.read()
        if values_equal(before, after):
            return None
        return Change(key, "value", _short(before), _short(after))
    if a.shape != b.shape:
        return Change(key, "shape", str(list(a.shape or ())), str(list(b.shape or ())))
    if a.dtype != b.dtype:
        return Change(key, "dtype", str(a.dtype), str(b.dtype))
    difference = tensor_difference(a.read(), b.read(), rtol=rtol, atol=atol)
    if difference.beyond == 0:
        return None
    elements = 1
    for size in a.shape or ():
        elements *= size
    return Change(
        key,
        "values",
        str(a.dtype),
        str(b.dtype),
        beyond=difference.beyond,
        elements=elements,
        max_abs=difference.max_abs,
    )


def _kind(entry: Entry) -> str:
    if entry.dtype is None:
        return "a value"
    return f"tensor {entry.dtype} {list(entry.shape or ())}"


def _short(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
