"""The auditor's fast path for the same refused object again: one walk of its opcodes.

A checkpoint saved before its weights_only fix holds one refused class many times: fifty
`datetime.date`s, an Enum member per seed slot. torch's rules flag the class's GLOBAL once;
every later object built from it takes a copy of that finding at its REDUCE
(`TorchRules._take_over`). Everything else the interpreter does for such an object (its
argument tuples, an inner `_codecs.encode` call, the stage-2 gate's bookkeeping, moot once a
finding exists) changes no report once its arguments are known to be clean.

This path only recognises; it never decides anything the interpreter would decide
differently. An object run is taken when:
- it starts with a GET of a class whose first object already took its finding, and ends at
  the REDUCE that calls it (and that REDUCE's PUT);
- between them are only GETs, PUTs, small literals, strings of at most PREVIEW characters
  (valid UTF-8), TUPLE1-3, EMPTY_TUPLE and REDUCEs;
- what it reads from the memo is the same objects (by identity) as when a run with the same
  opcodes (string contents aside: a string is a leaf the rules only carry, and the refused
  class's object is named by the class alone) was replayed by the interpreter on its own
  and came out clean, with no global in what it built; the globals it reads are still
  unflagged.
Taking one does what the interpreter would: the object is pushed, takes the finding's copy
at its REDUCE, its PUT is set, and the run's other memo entries are deferred
(`DeferredRecord`: the first GET of one replays the run, as for tensor records).
"""

from __future__ import annotations

import re
import struct
from typing import Any

from pytest_ckpt.audit.nodes import GLOBAL_TYPE, Node
from pytest_ckpt.audit.opcodes import PREVIEW, Blob, MalformedPickle, TruncatedPickle, new_blob
from pytest_ckpt.audit.tensor_records import DeferredRecord

_GET1, _GET4, _PUT1, _PUT4 = ord("h"), ord("j"), ord("q"), ord("r")
_BINUNICODE, _REDUCE = ord("X"), ord("R")
# literal pushes -> argument width: BININT1/2, BININT, BINFLOAT, NONE, NEWTRUE/FALSE, EMPTY_TUPLE
_LITERALS = {
    ord("K"): 1, ord("M"): 2, ord("J"): 4, ord("G"): 8, ord("N"): 0, 0x88: 0, 0x89: 0,
    ord(")"): 0,
}  # fmt: skip
_TUPLES = {0x85: 1, 0x86: 2, 0x87: 3}  # TUPLE1-3 -> how many values they take
_U32 = struct.Struct("<I").unpack_from
_MAX_OPS = 64  # opcodes in one object run
_MAX_LEARNED = 64  # replays per pickle to learn runs: a file that keeps changing pays no more
_MISSING = object()
# Where an object run may start: a GET, then what pushes its first argument (or a GET).
# A superset: `_walk` decides. Part of the interpreter's records hint (`verdict`).
OBJECT_START = rb"(?:h.|j....)[hjXKMJGN\x88\x89\)]"
_IMMUTABLE = (Blob, int, float, bool, type(None))  # read values a replay may share


class _Run:
    """One object run's opcodes, as `_walk` found them (to learn it: `_learned`)."""

    __slots__ = ("parts", "puts", "reads", "reduce_at", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.parts: list[bytes] = []  # its opcodes; a string is b"X", a PUT b"q"
        self.reads: list[int] = []  # memo indices read, the class's first
        self.puts: list[int] = []  # memo indices written before the class is called
        self.reduce_at = start  # the REDUCE that calls the class


def _walk(data: bytes, pos: int, size: int) -> _Run | None:
    """The object run starting with the GET at `pos`, or None (not one this path takes)."""
    run, depth = _Run(pos), 0
    parts, reads, puts = run.parts, run.reads, run.puts
    for _ in range(_MAX_OPS):
        if pos >= size:
            return None
        code = data[pos]
        if code in (_GET1, _GET4):
            width = 2 if code == _GET1 else 5
            if pos + width > size:
                return None
            parts.append(data[pos : pos + width])
            reads.append(data[pos + 1] if code == _GET1 else _U32(data, pos + 1)[0])
            depth, pos = depth + 1, pos + width
            continue
        if code in (_PUT1, _PUT4):
            width = 2 if code == _PUT1 else 5
            if pos + width > size:
                return None
            puts.append(data[pos + 1] if code == _PUT1 else _U32(data, pos + 1)[0])
            parts.append(b"q")
            pos += width
            continue
        if code in _LITERALS:
            width = _LITERALS[code] + 1
            if pos + width > size:
                return None
            parts.append(data[pos : pos + width])
            depth, pos = depth + 1, pos + width
        elif code == _BINUNICODE:
            end = _string_end(data, pos, size)
            if end is None:
                return None
            parts.append(b"X")
            depth, pos = depth + 1, end
        elif code in _TUPLES:
            count = _TUPLES[code]
            if depth - count < 1:
                return None  # would take the class into a tuple
            parts.append(data[pos : pos + 1])
            depth, pos = depth - count + 1, pos + 1
        elif code == _REDUCE:
            if depth < 2:
                return None
            parts.append(b"R")
            depth, pos = depth - 1, pos + 1
            if depth == 1:  # the class, called
                run.reduce_at = pos - 1
                return run
        else:
            return None
    return None


def _string_end(data: bytes, pos: int, size: int) -> int | None:
    """The end of the BINUNICODE at `pos` if it is one this path takes: at most PREVIEW
    characters (so its Blob is complete), valid UTF-8 (else the interpreter says where)."""
    if pos + 5 > size:
        return None
    length = _U32(data, pos + 1)[0]
    end = pos + 5 + length
    if length > PREVIEW or end > size:
        return None
    try:
        data[pos + 5 : end].decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None
    return end


class _Learned:
    """A run the interpreter replayed on its own and found clean: what taking another run
    with the same opcodes and the same reads does, and a pattern that finds such a run in
    one match (its strings and PUTs are groups; `_Learned.match` checks each string's
    declared length, which a regex cannot)."""

    __slots__ = ("pattern", "read_set", "reads", "shape", "stand_ins", "type_name", "values")

    def __init__(self, run: _Run, values: list[Any], obj: Node, stand_ins: dict) -> None:
        self.reads, self.values, self.stand_ins = run.reads, values, stand_ins
        self.read_set = frozenset(run.reads)
        self.type_name, self.shape = obj.type_name, obj.shape
        pieces = [_PIECES.get(part) or re.escape(part) for part in run.parts]
        self.pattern = re.compile(b"".join(pieces) + _PUT_GROUP + b"?", re.DOTALL).match

    def match(self, data: bytes, start: int) -> tuple[list[int], int | None, int, int] | None:
        """The run at `start` if it has this one's opcodes: (the memo indices its PUTs write
        before the class is called, the object's PUT index or None, where the REDUCE that
        calls the class is, where the run ends); None otherwise."""
        found = self.pattern(data, start)
        if found is None:
            return None
        *groups, result_put = found.groups()
        puts = []
        for group in groups:
            if group[0] == _BINUNICODE:  # X, its length (under 256), its text
                if group[1] != len(group) - 5:
                    return None  # the pattern cut the text elsewhere
                try:
                    group[5:].decode("utf-8", "surrogatepass")
                except UnicodeDecodeError:
                    return None
            else:
                puts.append(group[1] if group[0] == _PUT1 else _U32(group, 1)[0])
        end = found.end()
        if result_put is None:
            return puts, None, end - 1, end
        index = result_put[1] if result_put[0] == _PUT1 else _U32(result_put, 1)[0]
        return puts, index, end - 1 - len(result_put), end


_PUT_GROUP = rb"(q.|r....)"
# a string: X, a length under 256 (PREVIEW is 80) and its text, as short as the rest allows
_PIECES = {b"X": rb"(X.\x00\x00\x00.{0,%d}?)" % PREVIEW, b"q": _PUT_GROUP}


def take_object_runs(interp: Any, pos: int, *, named: bool) -> int | None:
    """Apply the object runs of refused classes that start at `pos`, one after another, to
    the interpreter (`verdict.PickleInterpreter`) and return the offset after the last; None,
    having changed nothing, when the first is not one. `named`: each is a dict entry, its
    name (a BINUNICODE and its PUT) pushed first."""
    data, size, memo, stack = interp.data, len(interp.data), interp.memo, interp.stack
    taken, last, checked = 0, None, None  # checked: a learned run whose reads hold now
    while True:
        name, start = None, pos
        if named:
            name = _entry_name(data, pos, size)
            if name is None:
                break
            start = name[3]
        matched = _run_at(interp, last, start)
        if matched is None:
            break
        learned, (puts, result_put, reduce_at, end) = matched
        name_put = None if name is None else name[2]
        cls = memo.get(learned.reads[0])
        if learned is not checked:
            if not (_taken_over(interp, cls) and _same_reads(interp, learned)):
                break
            checked = learned
        if name_put in learned.read_set:
            break  # the run reads the name just written
        # Taken: from here on, only what the interpreter would have done.
        result = Node(learned.type_name)
        result.shape = learned.shape
        if name is not None:
            blob = new_blob(Blob, ("str", name[1], name[0], pos + 5))
            stack.append(blob)
            if name_put is not None:
                _write(interp, name_put, blob)
        record = DeferredRecord(start, reduce_at + 1, learned.stand_ins, result)
        for index in puts:
            _write(interp, index, record)
        if result_put is not None:
            _write(interp, result_put, result)
        stack.append(result)
        interp._take_over(result, cls, reduce_at)
        reads = learned.read_set
        if name_put in reads or result_put in reads or not reads.isdisjoint(puts):
            checked = None  # it wrote what the next run would read: check again
        taken += 1
        pos, last = end, learned
    if not taken:
        return None
    interp.objects_taken += taken
    return pos


def _run_at(interp: Any, last: _Learned | None, start: int) -> tuple[_Learned, tuple] | None:
    """The object run at `start` (`_Learned.match`) and what it does: the run just taken
    again, most often, else walked and learned."""
    found = last.match(interp.data, start) if last is not None else None
    if found is not None and last is not None:
        return last, found
    learned = _learn_at(interp, interp.data, start, len(interp.data))
    found = learned.match(interp.data, start) if learned is not None else None
    return None if found is None or learned is None else (learned, found)


def _write(interp: Any, index: int, value: Any) -> None:
    """One memo write of the run, as `memo_put` does it (inlined where nothing is guarded)."""
    if index in interp.guarded or index < interp.spans_end:
        interp.memo_put(index, value)  # forgets what tensor records validated
        return
    memo = interp.memo
    if index > len(memo) + interp.memo_offset:
        interp.memo_sparse = True
    memo[index] = value


def _learn_at(interp: Any, data: bytes, start: int, size: int) -> _Learned | None:
    """What the run at `start` does, walked and (once per opcodes and reads) replayed."""
    run = _walk(data, start, size) if start < size and data[start] in b"hj" else None
    if run is None:
        return None
    return _learned(interp, run, [interp.memo.get(index, _MISSING) for index in run.reads])


def _taken_over(interp: Any, cls: Any) -> bool:
    """Is `cls` a refused class whose first object took its finding (each later object
    takes a copy), with the stage-2 gate already deferring to that finding?"""
    if type(cls) is not Node or cls.type_name != GLOBAL_TYPE or cls.findings:
        return False
    first = interp.built_from.get(id(cls))
    return first is not None and first[0] is cls and interp.gate.exotic


def _same_reads(interp: Any, learned: _Learned) -> bool:
    """Does the memo still hold what the learned run read, none of its globals besides the
    class (the first) flagged since?"""
    memo, built_from = interp.memo, interp.built_from
    if not _identical(learned.values, [memo.get(index, _MISSING) for index in learned.reads]):
        return False
    return not any(
        type(value) is Node and (value.findings or id(value) in built_from)
        for value in learned.values[1:]
    )


def _learned(interp: Any, run: _Run, values: list[Any]) -> _Learned | None:
    """What a run with these opcodes and these reads does, replayed once by the interpreter
    on its own (kept by its opcodes); None if it is not clean."""
    key = b"".join(run.parts)
    learned = interp.object_runs.get(key, _MISSING)
    if learned is not _MISSING and (learned is None or _identical(learned.values, values)):
        return learned
    if interp.object_learns >= _MAX_LEARNED:
        return None
    interp.object_learns += 1
    stand_ins = _stand_ins(run.reads, values)
    learned = None
    if stand_ins is not None:
        obj = _replayed(interp, run, stand_ins)
        learned = None if obj is None else _Learned(run, values, obj, stand_ins)
    interp.object_runs[key] = learned
    return learned


def _identical(kept: list[Any], values: list[Any]) -> bool:
    """The same objects, one by one (values read from the memo are compared by identity)."""
    return all(a is b for a, b in zip(kept, values, strict=True))


def _stand_ins(reads: list[int], values: list[Any]) -> dict[int, Any] | None:
    """The memo entries a replay of the run reads: globals as clean copies (a replay must
    not see, or take over, findings they gained), immutable values as they are; None when
    a read is anything else, or unset."""
    stand_ins: dict[int, Any] = {}
    for index, value in zip(reads, values, strict=True):
        if type(value) is Node and value.type_name == GLOBAL_TYPE:
            stand_ins[index] = Node(GLOBAL_TYPE, name=value.name)
        elif isinstance(value, _IMMUTABLE):
            stand_ins[index] = value
        else:
            return None
    return stand_ins


def _replayed(interp: Any, run: _Run, stand_ins: dict[int, Any]) -> Node | None:
    """The object the run builds (`_walk` counted it the only value left), run through the
    interpreter alone, if it is clean and no global is reachable from what the run built
    (a stand-in must never be)."""
    try:
        replay = interp.replay(run.start, run.reduce_at + 1, stand_ins)
    except (MalformedPickle, TruncatedPickle):
        return None
    obj = replay.end_value
    if replay.findings or type(obj) is not Node:
        return None
    if _holds_a_global([obj, *(replay.memo[index] for index in run.puts)]):
        return None
    return obj


def _holds_a_global(values: list[Any]) -> bool:
    """Is a GLOBAL node reachable from these values (their children, transitively)?"""
    seen: set[int] = set()
    pending = [v for v in values if type(v) is Node]
    while pending:
        node = pending.pop()
        if node.type_name == GLOBAL_TYPE:
            return True
        if id(node) not in seen:
            seen.add(id(node))
            pending += [child for _label, child in node.children]
    return False


def _entry_name(data: bytes, pos: int, size: int) -> tuple[str, int, int | None, int] | None:
    """A dict entry's name at `pos` (a BINUNICODE `_string_end` takes, and its PUT if any):
    (its text, its length, the PUT's memo index or None, where the value starts)."""
    end = _string_end(data, pos, size) if pos < size and data[pos] == _BINUNICODE else None
    if end is None:
        return None
    text = data[pos + 5 : end].decode("utf-8", "surrogatepass")
    if end + 2 <= size and data[end] == _PUT1:
        return text, end - pos - 5, data[end + 1], end + 2
    if end + 5 <= size and data[end] == _PUT4:
        return text, end - pos - 5, _U32(data, end + 1)[0], end + 5
    return text, end - pos - 5, None, end
