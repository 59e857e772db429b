"""Audit a `.safetensors` file as what it is: no pickle, so nothing in it can run; the
question is only whether it is well-formed, which the `safetensors` reader decides.

The format (huggingface/safetensors): 8 bytes, a little-endian u64 `N`; `N` bytes of UTF-8
JSON, an object mapping tensor names to `{"dtype", "shape", "data_offsets": [begin, end)}`
plus an optional `__metadata__` string-to-string map; then the data section. The verdict is
`safetensors.torch.load_file`'s. Its Rust reader (serde_json into u64/usize: `tensor.rs`)
refuses, and so does this audit, with the reason: `N` over 100 MB or past the end of the
file, a header that is not UTF-8 or not JSON (NaN, lone surrogates, a number out of f64
range anywhere, non-integers where integers belong, `-0` there too: serde_json reads it as
a float), an unknown dtype, shape or offsets that are not unsigned 64-bit integers, an
element count or bit count that overflows 64 bits as it is multiplied up dim by dim,
offsets that do not tile the data section from 0 to its end without gap or overlap (sorted
by offset), and a byte count other than numel x dtype bits / 8. Then torch must build each
tensor (`reshape`): a dtype torch has (not F6_*), every dim within int64, contiguous strides
within int64, and an even last dim for F4 (two per byte).
The package is not needed: only the header is read, never tensor bytes. A header of over
two million JSON values is refused unchecked (the reader might accept it; checking it
would take gigabytes).

A tensor name given twice is read (the last one wins) but is a finding: two parsers of one
file may disagree on which tensor it holds.

`FORMAT` is safetensors in the formats table (`audit.formats.table`).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING

from pytest_ckpt.audit import Report
from pytest_ckpt.audit.escape import shown
from pytest_ckpt.audit.formats import Format, Probe
from pytest_ckpt.audit.nodes import Finding

if TYPE_CHECKING:
    from pytest_ckpt.audit.allowlist import Allowlist

MAX_HEADER_BYTES = 100_000_000  # the Rust reader's limit
MAX_JSON_DEPTH = 128  # serde_json's recursion limit
# An auditor limit, not the reader's: JSON values (commas + 1) a header may hold, so that
# checking one costs at most ~0.5 GB; real headers hold about six per tensor.
MAX_HEADER_VALUES = 2_000_000
_U64 = 1 << 64
METADATA_KEY = "__metadata__"
TENSOR_FIELDS = ("dtype", "shape", "data_offsets")
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16,
    "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64,
    "U64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
}  # fmt: skip
# The dtypes safetensors.torch builds (its `get_pydtype`): all the reader knows but F6_*.
TORCH_DTYPES = frozenset(DTYPE_BITS) - {"F6_E2M3", "F6_E3M2"}
_I64_MAX = (1 << 63) - 1
_FIX = "re-save it with safetensors.torch.save_file, or copy the file again"


class BadSafetensors(ValueError):
    """The file is not a well-formed safetensors file: the reader would refuse it."""


@dataclass(slots=True, frozen=True)
class Header:
    """What a well-formed header declares: tensor count, data bytes, metadata entries."""

    tensors: int
    data_bytes: int
    metadata: int
    duplicates: tuple[str, ...]  # names (tensor or metadata keys) given more than once
    unknown_fields: int  # tensor fields the reader ignores


def looks_like_safetensors(head: bytes) -> bool:
    """Do these first bytes (at least 9) start a safetensors file? For files whose name does
    not say so: a header length in range, then the JSON object's opening brace."""
    if len(head) < 9:
        return False
    (size,) = struct.unpack_from("<Q", head)
    return 2 <= size <= MAX_HEADER_BYTES and head[8:9] == b"{"


def is_safetensors(probe: Probe) -> bool:
    """A file whose first bytes start a safetensors header, or one named `.safetensors`
    that is not a zip or a pickle (a broken one: its audit says what is wrong)."""
    if probe.head is None:
        return False
    if looks_like_safetensors(probe.head):
        return True
    return probe.suffix == ".safetensors" and not (probe.zip or probe.pickle)


def audit_safetensors(path: str | os.PathLike[str]) -> Report:
    """The audit of one safetensors file: ok (nothing in it runs), a finding for an ambiguous
    header, or unreadable with the reader's reason. Never raises for a bad file."""
    name = os.fspath(path)
    try:
        header = read_header(path)
    except BadSafetensors as err:
        return Report(name, "safetensors", (), error=str(err))
    except OSError as err:
        return Report(name, "safetensors", (), error=f"cannot read: {err.strerror or err}")
    findings = tuple(
        Finding(
            "duplicate-key",
            f"the header gives {shown(key)} more than once: safetensors keeps the last, "
            f"another reader may keep the first",
            None,
            "re-save the tensors with safetensors.torch.save_file (one entry per name)",
            False,
            0,
            f"header[{shown(key)}]",
        )
        for key in header.duplicates
    )
    notes: tuple[str, ...] = ()
    if header.unknown_fields:
        notes = (f"{header.unknown_fields} tensor field(s) the safetensors reader ignores",)
    summary = (
        f"{header.tensors} tensors, {header.data_bytes} data bytes, {header.metadata} "
        f"metadata entries: no pickle, nothing in it runs on load"
    )
    return Report(name, "safetensors", findings, notes=notes, summary=summary)


def read_header(path: str | os.PathLike[str]) -> Header:
    """Read and check the header against the file's size; raises BadSafetensors."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise BadSafetensors(f"{size} bytes: too short for the 8-byte header length")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise BadSafetensors(
                f"header length {length} is over the reader's {MAX_HEADER_BYTES}-byte limit"
            )
        if 8 + length > size:
            raise BadSafetensors(
                f"header length {length} runs past the end of the file ({size} bytes): truncated?"
            )
        raw = handle.read(length)
    return check_header(raw, size - 8 - length)


def check_header(raw: bytes, data_bytes: int) -> Header:
    """Check a header's bytes against a data section of `data_bytes`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadSafetensors(f"the header is not UTF-8 (byte {err.start})") from None
    if raw.count(b",") >= MAX_HEADER_VALUES:
        raise BadSafetensors(
            f"the header holds over {MAX_HEADER_VALUES} JSON values: refusing to check it "
            f"(an auditor limit: real headers hold about six per tensor)"
        )
    duplicates: list[str] = []
    try:
        top = json.loads(
            text,
            object_pairs_hook=lambda pairs: _object(pairs, duplicates),
            parse_constant=_no_constant,
            parse_float=_serde_float,
            parse_int=_serde_int,
        )
    except (ValueError, RecursionError) as err:
        raise BadSafetensors(f"the header is not JSON: {_first_line(err)}") from None
    if not isinstance(top, dict):
        raise BadSafetensors(f"the header is a JSON {type(top).__name__}, not an object")
    _check_strings_and_depth(top)
    metadata = top.pop(METADATA_KEY, None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise BadSafetensors(f"{METADATA_KEY} must map strings to strings")
    spans = []
    unknown = 0
    for name, info in top.items():
        dtype, shape, begin, end, extra = _tensor_info(name, info)
        unknown += extra
        spans.append((begin, end, name, dtype, shape))
    spans.sort(key=lambda span: (span[0], span[1]))
    position = 0
    for begin, end, name, dtype, shape in spans:
        if begin != position or end < begin:
            problem = "overlaps the tensor before it" if begin < position else "leaves a gap"
            if end < begin:
                problem = "ends before it begins"
            raise BadSafetensors(
                f"tensor {shown(name)}: data_offsets [{begin}, {end}) {problem} "
                f"(expected to begin at {position})"
            )
        bits = _bit_count(name, dtype, shape)
        if bits % 8 or bits // 8 != end - begin:
            raise BadSafetensors(
                f"tensor {shown(name)}: {dtype} {shape} is {bits / 8:g} bytes but "
                f"data_offsets span {end - begin}"
            )
        _check_torch_builds(name, dtype, shape)
        position = end
    if position != data_bytes:
        raise BadSafetensors(
            f"the tensors cover {position} of the {data_bytes} data bytes: the offsets must "
            f"reach the end of the file"
        )
    unique = tuple(dict.fromkeys(duplicates))  # each once, in the order first seen
    return Header(len(top), data_bytes, len(metadata or {}), unique, unknown)


def _object(pairs: list[tuple[str, object]], duplicates: list[str]) -> dict[str, object]:
    """A JSON object; a repeated key is refused inside a tensor's info and for `__metadata__`
    (the reader's structs refuse it) and recorded elsewhere (its maps keep the last)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                if key in (*TENSOR_FIELDS, METADATA_KEY):
                    raise ValueError(f"duplicate field {key!r}")
                duplicates.append(key)
            seen.add(key)
    return result


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _serde_float(text: str) -> float:
    """serde_json refuses a number that overflows f64 ("number out of range")."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _serde_int(text: str) -> int | float:
    """serde_json reads `-0` as a float (so no u64 field takes it), and an integer past
    64 bits as an f64, refused past f64's range."""
    value = int(text)
    if value == 0 and text.startswith("-"):
        return -0.0
    if not -_U64 < value < _U64:
        try:
            float(value)
        except OverflowError:
            raise ValueError(f"number out of range: {text[:40]}...") from None
    return value


def _bit_count(name: str, dtype: str, shape: list[int]) -> int:
    """numel x dtype bits, as the Rust reader multiplies them (each step within u64)."""
    where = f"tensor {shown(name)}: {dtype} {shape}"
    numel = 1
    for extent in shape:
        numel *= extent
        if numel >= _U64:
            raise BadSafetensors(f"{where}: the element count overflows a 64-bit size")
    bits = numel * DTYPE_BITS[dtype]
    if bits >= _U64:
        raise BadSafetensors(f"{where}: the bit count overflows a 64-bit size")
    return bits


def _check_torch_builds(name: str, dtype: str, shape: list[int]) -> None:
    """safetensors.torch's part, after the reader's: a torch dtype, then `reshape(shape)`,
    which needs dims and contiguous strides within int64 (F4: an even last dim)."""
    where = f"tensor {shown(name)}: {dtype} {shape}"
    if dtype not in TORCH_DTYPES:
        raise BadSafetensors(f"{where}: there is no torch dtype for it (load_file refuses it)")
    if any(extent > _I64_MAX for extent in shape):
        raise BadSafetensors(f"{where}: a dim past int64, torch's size type")
    stride = 1
    for extent in reversed(shape[1:]):
        stride *= max(extent, 1)
        if stride > _I64_MAX:
            raise BadSafetensors(f"{where}: a contiguous stride past int64 (torch refuses it)")
    if dtype == "F4" and shape and shape[-1] % 2:
        raise BadSafetensors(f"{where}: torch packs F4 two per byte, so the last dim is even")


def _check_strings_and_depth(top: dict[str, object]) -> None:
    """Strings must be valid Unicode (no lone surrogates, which Python's json lets through)
    and nesting within serde_json's limit. Iterative: a hostile header is deep."""
    stack: list[tuple[object, int]] = [(top, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BadSafetensors(f"the header nests deeper than {MAX_JSON_DEPTH} levels")
        items: Iterable[object] = ()
        if isinstance(value, dict):
            items = chain(value.keys(), value.values())
        elif isinstance(value, list):
            items = value
        for item in items:
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise BadSafetensors(f"a lone surrogate in {shown(item)}") from None
            elif isinstance(item, (dict, list)):
                stack.append((item, depth + 1))


def _tensor_info(name: str, info: object) -> tuple[str, list[int], int, int, int]:
    """(dtype, shape, begin, end, unknown field count) of one header entry."""
    where = f"tensor {shown(name)}"
    if not isinstance(info, dict):
        raise BadSafetensors(f"{where}: expected an object with {', '.join(TENSOR_FIELDS)}")
    missing = [f for f in TENSOR_FIELDS if f not in info]
    if missing:
        raise BadSafetensors(f"{where}: missing field {missing[0]!r}")
    dtype = info["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise BadSafetensors(f"{where}: unknown dtype {shown(str(dtype), 40)}")
    shape = _unsigned_list(info["shape"], f"{where}: shape")
    offsets = _unsigned_list(info["data_offsets"], f"{where}: data_offsets")
    if len(offsets) != 2:
        raise BadSafetensors(f"{where}: data_offsets must be [begin, end], got {len(offsets)}")
    return dtype, shape, offsets[0], offsets[1], len(info) - len(TENSOR_FIELDS)


def _unsigned_list(value: object, where: str) -> list[int]:
    if not isinstance(value, list) or not all(type(v) is int and 0 <= v < _U64 for v in value):
        raise BadSafetensors(f"{where} must be a list of unsigned 64-bit integers")
    return value


def _first_line(err: BaseException) -> str:
    if isinstance(err, RecursionError):
        return "nested too deep"
    return str(err).splitlines()[0][:200]


def _audit_as_format(
    path: str, allowlist: Allowlist, *, allow: tuple[str, ...], map_location: str | None
) -> Report:
    """No pickle, so no allowlist and no device: the header is the whole question."""
    return audit_safetensors(path)


FORMAT = Format("safetensors", is_safetensors, _audit_as_format)
