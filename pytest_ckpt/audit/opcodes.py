"""Decode pickle opcodes (protocols 0-5) from bytes, bounded, without running anything.

`pickletools.genops` would read a declared length straight from the file, so a hostile
BINBYTES8 claiming 2**63 bytes could make it try to allocate that much. Here every argument
is sliced from an in-memory buffer after checking that it fits, and the opcode metadata comes
from `pickletools.opcodes` (names and argument kinds only).
"""

from __future__ import annotations

import codecs
import pickletools
import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

from pytest_ckpt.errors import MalformedPickle, TruncatedPickle

_BY_CODE = {op.code.encode("latin-1")[0]: op for op in pickletools.opcodes}
PREVIEW = 80  # longest string/bytes value kept (for paths and checks), in characters

# The opcode names other modules ask about, by what they mean (here, so that only the
# decoder, the machine and torch's rules know opcodes by name).
STOP = "STOP"
# opcodes through which a pickle can import or call something
CODE_RUNNING = frozenset(
    {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX",
     "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"}
)  # fmt: skip


class Op(NamedTuple):
    """One decoded opcode (a tuple: the decoder makes ~30 per tensor, so it must be cheap)."""

    name: str
    arg: Any
    offset: int


new_op = tuple.__new__  # NamedTuple's own __new__ is a Python function: this is the C one


class Blob(NamedTuple):
    """A str/bytes argument: its length and a short preview (the whole value if short).

    A tuple, like `Op`: a state dict has one per key, and the auditor makes them by the
    thousand."""

    kind: str  # "str" or "bytes"
    length: int
    preview: Any
    start: int = 0  # offset of the full value in the pickle (for the converter)

    @property
    def complete(self) -> bool:
        return self.length <= PREVIEW


# `new_blob(Blob, (kind, length, preview, start))`: Blob's generated __new__ is a Python
# function; this is the C one, for the fast paths that make a Blob per state dict entry.
new_blob = tuple.__new__


class _Reader:
    def __init__(self, data: bytes, start: int) -> None:
        self.data = data
        self.pos = start

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise TruncatedPickle(
                f"pickle declares {n} bytes at offset {self.pos} but only "
                f"{max(len(self.data) - self.pos, 0)} remain"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def line(self) -> bytes:
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise TruncatedPickle(f"unterminated line at offset {self.pos}")
        chunk = self.data[self.pos : end]
        self.pos = end + 1
        return chunk

    def blob(self, n: int, kind: str) -> Blob:
        if n < 0 or self.pos + n > len(self.data):
            raise TruncatedPickle(
                f"pickle declares a {n}-byte {kind} at offset {self.pos} but only "
                f"{max(len(self.data) - self.pos, 0)} bytes remain"
            )
        start = self.pos
        raw = self.data[start : start + min(n, PREVIEW * 4)]
        self.pos += n
        if kind == "str":
            preview = utf8_text(self.data, start, n)
            return Blob("str", n, preview[:PREVIEW] if n > PREVIEW else preview, start)
        return Blob("bytes", n, bytes(raw[:PREVIEW]), start)


def utf8_text(data: bytes, start: int, n: int) -> str:
    """The text of a BINUNICODE (as torch decodes it: UTF-8, surrogates passed), or its first
    `PREVIEW * 4` bytes' worth when longer: the rest is checked in chunks, never held."""
    try:
        if n <= PREVIEW * 4:
            return data[start : start + n].decode("utf-8", "surrogatepass")
        decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass")
        view = memoryview(data)[start : start + n]
        head = decoder.decode(view[: PREVIEW * 4])
        for chunk in range(PREVIEW * 4, n, 1 << 20):
            decoder.decode(view[chunk : chunk + (1 << 20)])
        decoder.decode(b"", final=True)
        return head
    except UnicodeDecodeError as err:
        raise MalformedPickle(
            f"string at offset {start} is not valid UTF-8 ({err.reason}): torch cannot read it"
        ) from None


def _unpack(reader: _Reader, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    return struct.unpack(fmt, reader.take(size))[0]


def _text_blob(raw: bytes) -> Blob:
    text = raw.decode("utf-8", "replace")
    return Blob("str", len(text), text[:PREVIEW])


def _read_arg(kind: str, r: _Reader) -> Any:
    if kind == "uint1":
        return r.take(1)[0]
    if kind == "uint2":
        return _unpack(r, "<H")
    if kind == "int4":
        return _unpack(r, "<i")
    if kind == "uint4":
        return _unpack(r, "<I")
    if kind == "uint8":
        return _unpack(r, "<Q")
    if kind == "float8":
        return _unpack(r, ">d")
    if kind == "long1":
        return int.from_bytes(r.take(r.take(1)[0]), "little", signed=True)
    if kind == "long4":
        n = _unpack(r, "<i")
        if n > 1 << 20:
            raise MalformedPickle(f"LONG4 of {n} bytes at offset {r.pos}: refusing to decode")
        return int.from_bytes(r.take(n), "little", signed=True)
    if kind == "bytes1":
        return r.blob(r.take(1)[0], "bytes")
    if kind in ("bytes4",):
        return r.blob(_unpack(r, "<I"), "bytes")
    if kind in ("bytes8", "bytearray8"):
        return r.blob(_unpack(r, "<Q"), "bytes")
    if kind == "string1":
        return r.blob(r.take(1)[0], "bytes")
    if kind == "string4":
        return r.blob(_unpack(r, "<i"), "bytes")
    if kind == "unicodestring1":
        return r.blob(r.take(1)[0], "str")
    if kind == "unicodestring4":
        return r.blob(_unpack(r, "<I"), "str")
    if kind == "unicodestring8":
        return r.blob(_unpack(r, "<Q"), "str")
    if kind in ("stringnl", "stringnl_noescape", "unicodestringnl"):
        return _text_blob(r.line())
    if kind == "stringnl_noescape_pair":
        return (r.line().decode("utf-8", "replace"), r.line().decode("utf-8", "replace"))
    if kind in ("decimalnl_short", "decimalnl_long"):
        text = r.line().rstrip(b"L")
        if len(text) > 4300:
            raise MalformedPickle(f"integer literal of {len(text)} digits at offset {r.pos}")
        try:
            return int(text) if text not in (b"00", b"01") else text == b"01"
        except ValueError:
            raise MalformedPickle(f"bad integer literal {text[:20]!r}") from None
    if kind == "floatnl":
        try:
            return float(r.line())
        except ValueError:
            raise MalformedPickle(f"bad float literal at offset {r.pos}") from None
    raise MalformedPickle(f"unknown argument kind {kind}")


# Arguments the fast path decodes inline: fixed-size ints and floats (most of a state dict).
_FIXED = {"uint1": ("<B", 1), "uint2": ("<H", 2), "int4": ("<i", 4), "uint4": ("<I", 4),
          "uint8": ("<Q", 8), "float8": (">d", 8)}  # fmt: skip
_TABLE = {
    code: (
        op.name,
        op.arg.name if op.arg is not None else None,
        _FIXED.get(op.arg.name) if op.arg else None,
    )
    for code, op in _BY_CODE.items()
}


def decode_at(data: bytes, pos: int) -> tuple[Op, int]:
    """The opcode at `pos` and the offset just after it."""
    if pos >= len(data):
        raise TruncatedPickle(f"pickle ends at offset {pos} without STOP")
    entry = _TABLE.get(data[pos])
    if entry is None:
        raise MalformedPickle(f"byte {data[pos]:#04x} at offset {pos} is not a pickle opcode")
    name, kind, fixed = entry
    after = pos + 1
    if fixed is not None:
        fmt, width = fixed
        if after + width > len(data):
            raise TruncatedPickle(f"{name} at offset {pos} runs past the end")
        return new_op(Op, (name, struct.unpack_from(fmt, data, after)[0], pos)), after + width
    if kind is None:
        return new_op(Op, (name, None, pos)), after
    reader = _Reader(data, after)
    arg = _read_arg(kind, reader)
    return new_op(Op, (name, arg, pos)), reader.pos


def iter_ops(data: bytes, start: int = 0) -> Iterator[Op]:
    """Yield opcodes from `data[start:]` through STOP (inclusive)."""
    pos = start
    while True:
        op, pos = decode_at(data, pos)
        yield op
        if op.name == STOP:
            return


def end_of_pickle(data: bytes, start: int = 0) -> int:
    """Offset just after the STOP of the pickle starting at `start`."""
    *_, stop = iter_ops(data, start)
    return stop.offset + 1


# ---- How far pickle gets through bytes that may not be a pickle at all (`formats.bin_files`)


class Reach(NamedTuple):
    """Where `pickle.load` stops on some bytes (`headerless_reach`). `kind`:
    - "import": at GLOBAL or INST (`detail`: their two raw lines) or STACK_GLOBAL (None);
    - "stop": at STOP (`detail`: the value it returns when that is a number, `UNKNOWN` for
      a number the decoder could not read, else None);
    - "needs": pickle goes on only if the file holds `detail` bytes or more;
    - "fails": pickle raises there, having imported and called nothing."""

    kind: str
    detail: Any = None


_MARK = pickletools.markobject
UNKNOWN = "a number pickle reads and the decoder does not"  # compared by identity
# Number arguments C pickle reads where `decode_at` refuses: INT and LONG lines in base 0
# (`0x10`), INT, FLOAT, PUT and GET lines up to a NUL (`5\0junk`), a LONG4 of over 1 MiB.
_LITERAL_LINES = frozenset(("decimalnl_short", "decimalnl_long", "floatnl"))
# pickletools' names of the stack objects that are never text (STACK_GLOBAL's arguments)
_NEVER_TEXT = frozenset(
    ("int", "int_or_bool", "bool", "bytes", "bytearray", "None", "float", "list", "tuple",
     "dict", "set", "frozenset", "buffer", "mark")
)  # fmt: skip
# Need a callable, a class, the copyreg registry (empty), a persistent_load or out-of-band
# buffers: none exists before the first import, so pickle.load fails at these.
_FAIL_BEFORE_IMPORT = frozenset(
    ("REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID",
     "NEXT_BUFFER")
)  # fmt: skip
_MEMO_PUTS = frozenset(("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"))
_MEMO_GETS = frozenset(("GET", "BINGET", "LONG_BINGET"))
# length-prefixed argument kinds: (width of the length, signed)
_LENGTH_PREFIX = {
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}


def headerless_reach(head: bytes) -> Reach:
    """How far `pickle.load` (or torch.load, which reads a non-zip file as pickles) gets
    through bytes that start with `head`, run symbolically with pickletools' stack effects:
    the stack (and what may be text on it), MARKs and the memo. Where the stack cannot say
    whether pickle fails (BUILD on what, APPEND to what), it goes on: the answer errs
    towards "it may unpickle"."""
    stack: list[tuple[Any, Any]] = []  # (pickletools stack object, the value if a number)
    marks: list[int] = []  # stack positions of the MARKs
    memo: dict[int, tuple[Any, Any]] = {}
    memo_unknown = False  # a PUT at a key the decoder could not read: any GET may hit it
    pos = 0
    while True:
        try:
            op, after = decode_at(head, pos)
        except (TruncatedPickle, MalformedPickle) as err:
            unread = _unread_number(head, pos) if isinstance(err, MalformedPickle) else None
            if unread is None:
                return _cut_short(head, pos, truncated=isinstance(err, TruncatedPickle))
            op, after = unread
        name, info = op.name, _BY_CODE[head[pos]]
        fence = marks[-1] + 1 if marks else 0
        if name in ("GLOBAL", "INST"):
            if name == "INST" and not marks:
                return Reach("fails")
            return Reach("import", head[pos + 1 : after])
        if name == "STACK_GLOBAL":
            texts = len(stack) - fence >= 2 and all(
                s[0].name not in _NEVER_TEXT for s in stack[-2:]
            )
            return Reach("import") if texts else Reach("fails")
        if name == "STOP":
            return Reach("stop", stack[-1][1]) if len(stack) > fence else Reach("fails")
        if name in _FAIL_BEFORE_IMPORT or (name == "PROTO" and op.arg > 5):
            return Reach("fails")
        if name in _MEMO_GETS:
            if op.arg in memo:
                stack.append(memo[op.arg])
            elif memo_unknown or (op.arg is UNKNOWN and memo):
                stack.append((pickletools.anyobject, UNKNOWN))
            else:
                return Reach("fails")
        elif name in _MEMO_PUTS or name == "DUP":  # both keep what the top is
            if len(stack) <= fence or (type(op.arg) is int and op.arg < 0):
                return Reach("fails")
            if op.arg is UNKNOWN:
                memo_unknown = True
            elif name == "DUP":
                stack.append(stack[-1])
            else:
                memo[len(memo) if op.arg is None else op.arg] = stack[-1]
        elif not _run_stack_effect(info, op.arg, stack, marks):
            return Reach("fails")
        pos = after


def _run_stack_effect(info: Any, arg: Any, stack: list, marks: list[int]) -> bool:
    """Apply one opcode's pickletools stack effect; False where pickle underflows."""
    before = info.stack_before
    fence = marks[-1] + 1 if marks else 0
    if _MARK in before or (info.name == "POP" and len(stack) <= fence):
        if not marks:
            return False
        below = marks.pop()
        wanted = before.index(_MARK) if _MARK in before else 0
        if below - (marks[-1] + 1 if marks else 0) < wanted:
            return False
        del stack[below - wanted :]
    else:
        if len(stack) - fence < len(before):
            return False
        if before:
            del stack[-len(before) :]
    number = arg if (type(arg) is int or arg is UNKNOWN) and len(info.stack_after) == 1 else None
    for kind in info.stack_after:
        if kind is _MARK:
            marks.append(len(stack))
        stack.append((kind, number))
    return True


def _unread_number(head: bytes, pos: int) -> tuple[Op, int] | None:
    """The opcode at `pos`, with an `UNKNOWN` argument, and the offset after it, where the
    decoder refused a number that C pickle may read (a literal line, a long LONG4)."""
    info = _BY_CODE.get(head[pos])
    if info is None or info.arg is None:
        return None
    if info.arg.name in _LITERAL_LINES:
        end = head.find(b"\n", pos + 1)
        return (Op(info.name, UNKNOWN, pos), end + 1) if end >= 0 else None
    if info.arg.name == "long4":
        after = pos + 5 + int.from_bytes(head[pos + 1 : pos + 5], "little", signed=True)
        return (Op(info.name, UNKNOWN, pos), after) if pos + 5 <= after <= len(head) else None
    return None


def _cut_short(head: bytes, pos: int, *, truncated: bool) -> Reach:
    """The opcode at `pos` could not be decoded from `head`: what the file must hold for
    pickle to read it (a length-prefixed one: its declared bytes), or where it fails."""
    info = _BY_CODE.get(head[pos]) if pos < len(head) else None
    if info is not None and info.name in _FAIL_BEFORE_IMPORT:
        return Reach("fails")  # whatever its argument holds
    prefix = _LENGTH_PREFIX.get(info.arg.n) if info is not None and info.arg else None
    if prefix is None:
        return Reach("needs", len(head) + 1) if truncated else Reach("fails")
    width, signed = prefix
    if pos + 1 + width > len(head):
        return Reach("needs", len(head) + 1)
    declared = int.from_bytes(head[pos + 1 : pos + 1 + width], "little", signed=signed)
    needs = pos + 1 + width + declared
    if declared < 0 or (not truncated and needs <= len(head)):
        return Reach("fails")  # a negative length, or bytes pickle refuses (not UTF-8)
    return Reach("needs", needs)
