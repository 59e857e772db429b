"""What a tensor (or Parameter) record torch.save writes looks like, byte for byte.

The fast path (`tensor_records`) recognises records with these regexes and reads their parts
in place; whether a recognised record is clean, and what taking it does, is its business.
"""

from __future__ import annotations

import re
import struct

from pytest_ckpt.audit.opcodes import PREVIEW

BININT, _BINUNICODE, _BINPUT, _LONG_BINPUT = ord("J"), ord("X"), ord("q"), ord("r")  # J: signed
_LONG_INDEX = struct.Struct("<xI").unpack  # a 5-byte LONG_BINGET / LONG_BINPUT
# all of a tensor's five PUTs (a Parameter's eight) in the 4-byte form: one unpack
LONG_PUTS = {n: struct.Struct("<" + "xI" * n).unpack for n in (5, 8)}

_INT_WIDTH = {ord("K"): 1, ord("M"): 2, BININT: 4}

_GET = rb"(h.|j....)"  # BINGET / LONG_BINGET, captured
_PUT = rb"(q.|r....)?"  # BINPUT / LONG_BINPUT, captured (absent when the pickler keeps no memo)
_INT = rb"(?:K.|M..|J....)"  # BININT1 / BININT2 / BININT
# A size or stride: EMPTY_TUPLE, TUPLE1-3 of as many ints, or MARK ints... TUPLE.
_SHAPE = rb"(?:\)|" + rb"|".join(_INT * n + bytes([0x84 + n]) for n in (1, 2, 3)) + rb"|\("
_SHAPE += _INT + rb"*t)"
# torch.save's storage keys are short decimal strings; one alternative per length keeps the
# declared length and the digits in step with no check in Python.
_DECIMAL_KEY = rb"|".join(
    b"X" + bytes([n]) + rb"\x00\x00\x00[0-9]{" + str(n).encode() + b"}" for n in range(1, 11)
)

_RECORD = b"".join(
    [
        _GET,  # 1: torch._utils._rebuild_tensor_v2
        rb"\(\(",  # MARK (its arguments) MARK (the persistent id)
        _GET,  # 2: 'storage'
        _GET,  # 3: the storage type, e.g. torch.FloatStorage
        rb"(?:(" + _DECIMAL_KEY + rb")" + _PUT + rb"|" + _GET + rb")",  # 4+5 new key | 6
        _GET,  # 7: the location, e.g. 'cpu'
        rb"(" + _INT + rb")",  # 8: numel
        rb"t" + _PUT,  # 9: TUPLE, the persistent id
        rb"Q(" + _INT + rb")",  # BINPERSID, 10: the storage offset
        rb"(" + _SHAPE + rb")" + _PUT,  # 11, 12: size
        rb"(" + _SHAPE + rb")" + _PUT,  # 13, 14: stride
        rb"([\x88\x89])",  # 15: requires_grad
        _GET,  # 16: collections.OrderedDict
        rb"\)R" + _PUT,  # 17: EMPTY_TUPLE REDUCE, the (empty) backward hooks
        rb"t" + _PUT,  # 18: TUPLE, the arguments
        rb"R" + _PUT,  # 19: REDUCE, the tensor
    ]
)
TENSOR_RECORD = re.compile(_RECORD, re.DOTALL)
# Where a record (a tensor's, or a Parameter's: one more GET) may start: a superset
RECORD_START = re.compile(rb"(?:h.|j....){1,2}\(\(", re.DOTALL)
# An nn.Parameter as torch.save writes it: `_rebuild_parameter(<tensor record>,
# requires_grad, OrderedDict())`, groups 1 (the GET of _rebuild_parameter), 2-20 (the
# tensor's, as above), 21 requires_grad, 22 OrderedDict's GET, 23-25 the three PUTs.
PARAMETER_RECORD = re.compile(
    _GET + _RECORD + rb"([\x88\x89])" + _GET + rb"\)R" + _PUT + rb"\x87" + _PUT + rb"R" + _PUT,
    re.DOTALL,
)


def record_at(data: bytes, pos: int, size: int, named: bool) -> tuple | None:
    """The record at `pos` (after its entry's name when `named`: BINUNICODE <4-byte length>
    <name> [BINPUT|LONG_BINPUT], read in place), or None: (where it starts, the name's memo
    index, the name, its tensor's groups as TENSOR_RECORD numbers them, a Parameter's own
    groups around them or (), where it ends, where its new storage key's opcode starts)."""
    record_start, name_index, name = pos, None, None
    if named:
        entry = _entry_name(data, pos, size)
        if entry is None:
            return None
        record_start, name_index, name = entry
    match = TENSOR_RECORD.match(data, record_start)
    if match is not None:
        return record_start, name_index, name, match.groups(), (), match.end(), match.start(4)
    match = PARAMETER_RECORD.match(data, record_start)
    if match is None:
        return None
    outer = match.groups()
    return record_start, name_index, name, outer[1:20], outer, match.end(), match.start(5)


def shape_ints(shape: bytes) -> list[int]:
    """The ints of a matched size or stride tuple (its opcodes, as the regex matched them)."""
    values, pos = [], 1 if shape[:1] == b"(" else 0
    while pos < len(shape) and shape[pos] in _INT_WIDTH:
        width = _INT_WIDTH[shape[pos]]
        raw = shape[pos + 1 : pos + 1 + width]
        values.append(int.from_bytes(raw, "little", signed=shape[pos] == BININT))
        pos += 1 + width
    return values


def memo_index(op: bytes) -> int:
    """The memo index of a matched GET or PUT (1-byte or 4-byte form)."""
    return op[1] if len(op) == 2 else _LONG_INDEX(op)[0]


def _entry_name(data: bytes, pos: int, size: int) -> tuple[int, int | None, str] | None:
    """A state dict entry's name at `pos` (BINUNICODE, and its PUT if any), read in place:
    (where the record starts, the name's memo index or None, the name); None if not one."""
    if pos + 5 > size or data[pos] != _BINUNICODE or data[pos + 2 : pos + 5] != b"\0\0\0":
        return None
    name_end = pos + 5 + data[pos + 1]
    if data[pos + 1] > PREVIEW or name_end + 5 > size:
        return None
    try:
        name = data[pos + 5 : name_end].decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None  # the interpreter reports it
    if data[name_end] == _BINPUT:
        return name_end + 2, data[name_end + 1], name
    if data[name_end] == _LONG_BINPUT:
        return name_end + 5, _LONG_INDEX(data[name_end : name_end + 5])[0], name
    return name_end, None, name
