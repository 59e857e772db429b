"""The one pickle machine: decoding loop, stack, metastack and memo, for every job in
pytest-ckpt that runs a pickle without Python's unpickler.

Two semantics run on it. The auditor's (`audit.verdict`) builds a symbolic `Node` for each
object and records where torch's weights_only unpickler would refuse; the static migrator's
(`migrate.static`) builds real primitives and tensors and refuses by path. A semantics is a
subclass that gives opcodes their meaning with `_op_<NAME>` methods; the machine decodes each
opcode (bounded, never trusting a declared length: `opcodes.decode_at`) and dispatches it.
What every semantics means alike lives here: PROTO and FRAME do nothing, MARK starts a new
stack, NONE/NEWTRUE/NEWFALSE and the number opcodes push their value.

`INLINE = True` runs the hot opcodes on the raw bytes without building an `Op` (memo PUT and
GET, small ints, MARK, booleans, None, short BINUNICODE strings: most of a state dict; and,
where the semantics accepts them, MEMOIZE and SHORT_BINUNICODE: protocol 4). A semantics
that turns it on means by them what the machine does (a string is the `Blob` that
`decode_at` gives, PUT, MEMOIZE and GET go through `memo_put`/`memo_get`), and may set
`take_records` to consume whole runs of opcodes at a GET or a string (BINUNICODE, and
SHORT_BINUNICODE where it runs inline: the auditor's tensor records, DCP's metadata records):
a recogniser that decides nothing itself.
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from pytest_ckpt.audit.opcodes import (
    PREVIEW,
    Blob,
    MalformedPickle,
    Op,
    TruncatedPickle,
    decode_at,
    new_blob,
    utf8_text,
)

# Opcodes run inline when INLINE is on: code -> argument width in bytes.
_BINPUT, _LONG_BINPUT, _BINGET, _LONG_BINGET = ord("q"), ord("r"), ord("h"), ord("j")
_BININT1, _BININT2, _BININT, _MARK = ord("K"), ord("M"), ord("J"), ord("(")
_NEWFALSE, _NEWTRUE, _NONE, _MEMOIZE = 0x89, 0x88, ord("N"), 0x94
_INLINE = {
    _BINPUT: ("BINPUT", 1), _LONG_BINPUT: ("LONG_BINPUT", 4), _BINGET: ("BINGET", 1),
    _LONG_BINGET: ("LONG_BINGET", 4), _BININT1: ("BININT1", 1), _BININT2: ("BININT2", 2),
    _BININT: ("BININT", 4), _MARK: ("MARK", 0), _NEWFALSE: ("NEWFALSE", 0),
    _NEWTRUE: ("NEWTRUE", 0), _NONE: ("NONE", 0), _MEMOIZE: ("MEMOIZE", 0),
}  # fmt: skip
_BINUNICODE, _SHORT_BINUNICODE = ord("X"), 0x8C
_UNPACK_I = struct.Struct("<I").unpack_from
_PUT_WIDTHS = {bytes([_BINPUT]): 2, bytes([_LONG_BINPUT]): 5}  # a PUT's opcode -> its size
_EMPTY_PUT = {
    _BINPUT: "PUT at offset {} with an empty stack",
    _LONG_BINPUT: "PUT at offset {} with an empty stack",
    _MEMOIZE: "MEMOIZE at offset {} needs a value on the stack",
}

# take_records(machine, pos, named=...) -> the offset after the opcodes it ran, or None
TakeRecords = Callable[..., "int | None"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector, restoring its state after.

    An audit allocates a few small objects per opcode (and per zip member) and frees nothing
    until the end; with torch imported, each full collection walks hundreds of thousands of
    live objects, which made audits quadratic-looking (half the time on 4096 tensors) and
    their timing erratic. Reference counting still frees everything.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class PickleMachine:
    """Run one pickle from `start` to its STOP, giving each opcode the subclass's meaning.

    `ACCEPTED`, when set, names the opcodes the semantics accepts: any other decoded opcode
    goes to `unaccepted(op)` before it runs (the auditor records a finding and carries on).
    """

    INLINE: ClassVar[bool] = False
    ACCEPTED: ClassVar[frozenset[str] | None] = None

    def __init__(self, data: bytes, *, start: int = 0) -> None:
        self.data = data
        self.start = start
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.end = start  # the offset after STOP, once run
        self.take_records: TakeRecords | None = None
        # when set, take_records is asked at a GET only where this matches (a C call: most
        # GETs start no record, and a Python call to say so costs more than the GET)
        self.records_hint: Callable[[bytes, int], object] | None = None
        # where MEMOIZE writes, less len(memo): a replay of part of a pickle starts with
        # only the memo entries that part reads, yet must write where the whole run did
        self.memo_offset = 0

    # ---- what a semantics may override ----------------------------------------------------

    def memo_put(self, index: int, value: Any) -> None:
        self.memo[index] = value

    def memo_get(self, index: int, offset: int) -> Any:
        if index not in self.memo:
            raise MalformedPickle(f"GET at offset {offset} reads memo {index}, never set")
        return self.memo[index]

    def unaccepted(self, op: Op) -> None:
        """An opcode outside ACCEPTED, about to run."""

    def unsupported(self, op: Op) -> Exception:
        """The error for an opcode the semantics has no `_op_` method for."""
        return MalformedPickle(f"no semantics for opcode {op.name}")

    def stop(self, op: Op) -> Any:
        """What STOP returns: the top of the stack."""
        return self._pop(op)

    # ---- stack ----------------------------------------------------------------------------

    def _pop(self, op: Op) -> Any:
        if not self.stack:
            raise MalformedPickle(f"{op.name} at offset {op.offset} pops an empty stack")
        return self.stack.pop()

    def _top(self, op: Op) -> Any:
        if not self.stack:
            raise MalformedPickle(f"{op.name} at offset {op.offset} needs a value on the stack")
        return self.stack[-1]

    def _pop_mark(self, op: Op) -> list[Any]:
        if not self.metastack:
            raise MalformedPickle(f"{op.name} at offset {op.offset} has no matching MARK")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _push(self, value: Any) -> None:
        self.stack.append(value)

    # ---- the opcodes every semantics means alike ------------------------------------------

    def _op_PROTO(self, op: Op) -> None:
        pass

    _op_FRAME = _op_PROTO

    def _op_MARK(self, op: Op) -> None:
        self.metastack.append(self.stack)
        self.stack = []

    def _op_MEMOIZE(self, op: Op) -> None:
        self.memo_put(len(self.memo) + self.memo_offset, self._top(op))

    def _op_NONE(self, op: Op) -> None:
        self.stack.append(None)

    def _op_NEWTRUE(self, op: Op) -> None:
        self.stack.append(True)

    def _op_NEWFALSE(self, op: Op) -> None:
        self.stack.append(False)

    def _op_BININT(self, op: Op) -> None:
        """The number opcodes: the decoded argument is the value."""
        self.stack.append(op.arg)

    _op_BININT1 = _op_BININT2 = _op_LONG1 = _op_LONG4 = _op_INT = _op_LONG = _op_BININT
    _op_BINFLOAT = _op_FLOAT = _op_BININT

    # ---- run ------------------------------------------------------------------------------

    @classmethod
    def _inline_table(cls) -> tuple[dict[int, int], bool]:
        """The opcodes run inline (code -> argument width), and whether SHORT_BINUNICODE
        is: only those the semantics accepts (one it refuses is decoded, to be flagged).
        Made once per class."""
        table = _INLINE_TABLES.get(cls)
        if table is None:
            accepted = cls.ACCEPTED
            widths = {
                code: width
                for code, (name, width) in _INLINE.items()
                if accepted is None or name in accepted
            }
            short = accepted is None or "SHORT_BINUNICODE" in accepted
            table = _INLINE_TABLES[cls] = (widths, short)
        return table

    def inline_string(self, code: int, pos: int, short_strings: bool) -> int | None:
        """A BINUNICODE (or, when `short_strings`, SHORT_BINUNICODE) of at most PREVIEW
        characters pushed as the `Blob` `decode_at` makes; the offset after it, or None
        (nothing done: the decoder takes it, and says what is wrong with it)."""
        data, size = self.data, len(self.data)
        if code == _BINUNICODE and pos + 5 <= size:
            start, length = pos + 5, struct.unpack_from("<I", data, pos + 1)[0]
        elif code == _SHORT_BINUNICODE and short_strings and pos + 2 <= size:
            start, length = pos + 2, data[pos + 1]
        else:
            return None
        if length > PREVIEW or start + length > size:
            return None
        self.stack.append(new_blob(Blob, ("str", length, utf8_text(data, start, length), start)))
        return start + length

    def _hint_after_string(self, hint: Callable[[bytes, int], object], pos: int) -> bool:
        """Does `records_hint` match after the short BINUNICODE at `pos` and its PUT?"""
        data = self.data
        if data[pos + 2 : pos + 5] != b"\0\0\0":
            return False
        end = pos + 5 + data[pos + 1]
        end += _PUT_WIDTHS.get(data[end : end + 1], 0)
        return bool(hint(data, end))

    def execute(self) -> Any:
        """Run to STOP and return what it pops; raises TruncatedPickle or MalformedPickle
        (and whatever the semantics raises)."""
        data, size = self.data, len(self.data)
        unpack_from = struct.unpack_from
        handlers = _handlers(type(self))
        inline, accepted, take_records = self.INLINE, self.ACCEPTED, self.take_records
        hint = self.records_hint
        inline_width, short_strings = self._inline_table()
        pos = self.start
        while True:
            if inline:
                if pos >= size:
                    raise TruncatedPickle(f"pickle ends at offset {pos} without STOP")
                code = data[pos]
                width = inline_width.get(code)
                if width is not None:
                    if pos + 1 + width > size:
                        raise TruncatedPickle(f"opcode at offset {pos} runs past the end")
                    stack = self.stack
                    if code in (_BINPUT, _LONG_BINPUT, _MEMOIZE):
                        if not stack:
                            raise MalformedPickle(_EMPTY_PUT[code].format(pos))
                        index = data[pos + 1] if code == _BINPUT else len(self.memo)
                        if code == _LONG_BINPUT:
                            index = _UNPACK_I(data, pos + 1)[0]
                        elif code == _MEMOIZE:
                            index += self.memo_offset
                        self.memo_put(index, stack[-1])
                    elif code in (_BINGET, _LONG_BINGET):
                        if take_records is not None and (hint is None or hint(data, pos)):
                            after = take_records(self, pos, named=False)
                            if after is not None:
                                pos = after
                                continue
                        index = data[pos + 1] if code == _BINGET else _UNPACK_I(data, pos + 1)[0]
                        stack.append(self.memo_get(index, pos))
                    elif code == _BININT1:
                        stack.append(data[pos + 1])
                    elif code == _BININT2:
                        stack.append(unpack_from("<H", data, pos + 1)[0])
                    elif code == _BININT:
                        stack.append(unpack_from("<i", data, pos + 1)[0])
                    elif code == _MARK:
                        self.metastack.append(stack)
                        self.stack = []
                    elif code == _NEWFALSE:
                        stack.append(False)
                    elif code == _NEWTRUE:
                        stack.append(True)
                    elif code == _NONE:
                        stack.append(None)
                    pos += 1 + width
                    continue
                if code in (_BINUNICODE, _SHORT_BINUNICODE):
                    if take_records is None:
                        named = False
                    elif code == _BINUNICODE:  # a dict entry's name: its value may be a record
                        named = hint is None or self._hint_after_string(hint, pos)
                    else:  # where it runs inline; a hint is for BINUNICODE names only
                        named = short_strings and hint is None
                    if named and take_records is not None:
                        after = take_records(self, pos, named=True)  # a dict entry
                        if after is not None:
                            pos = after
                            continue
                    after = self.inline_string(code, pos, short_strings)
                    if after is not None:
                        pos = after
                        continue
            op, pos = decode_at(data, pos)
            if accepted is not None and op.name not in accepted:
                self.unaccepted(op)
            if op.name == "STOP":
                self.end = pos
                return self.stop(op)
            handler = handlers.get(op.name)
            if handler is None:
                raise self.unsupported(op)
            handler(self, op)


_HANDLERS: dict[type, dict[str, Callable[[Any, Op], None]]] = {}
_INLINE_TABLES: dict[type, tuple[dict[int, int], bool]] = {}


def _handlers(machine: type) -> dict[str, Callable[[Any, Op], None]]:
    """Opcode name -> a machine class's `_op_` handler, as a function of (machine, op):
    found once per class (`dir` is slow), not bound once per pickle (a replay runs a few
    opcodes, and binding seventy methods cost it more than running them)."""
    handlers = _HANDLERS.get(machine)
    if handlers is None:
        handlers = _HANDLERS[machine] = {
            name[4:]: getattr(machine, name) for name in dir(machine) if name.startswith("_op_")
        }
    return handlers
