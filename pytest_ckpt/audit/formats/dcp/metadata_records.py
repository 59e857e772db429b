"""The records DCP's pickler repeats in `.metadata`, each recognised in one match.

A `.metadata` is mostly three records per tensor, each some 20-50 opcodes:
- a `TensorStorageMetadata` (NEWOBJ, a state dict: its `TensorProperties` built from a
  5-tuple, its `torch.Size`, a list of one `ChunkStorageMetadata`), after its fqn key;
- in `storage_data`, a `MetadataIndex` and a `_StorageInfo`: a class's NEWOBJ and a state
  dict of at most eight plain values (memo GETs, ints, None, booleans, `torch.Size` calls).

The pickle machine runs the scan (`metadata_scan`); at each GET it offers the bytes here
(`DcpRecords.take`). This module only recognises: it decides nothing. The first record of a
kind is run by the machine itself, on its own (`PickleInterpreter.replay`, torch_rules'
handlers, from the memo entries the record reads); a record the machine flags is left to
the opcode loop, which flags it there. A clean one's verdict is kept under what it can
depend on: the memo entries it reads as classes, callables and keys or values that are not
strings (by their GET's bytes, until a PUT writes one again), which of its shapes are empty,
and which of its plain values are strings (a string is a leaf the rules never judge; which
string changes only labels). A later record with the same key is then taken as the machine
would run it: its object pushed, its other memo entries counted but not written
(`PickleInterpreter.defer_memo`: the first GET or PUT of one replays the record), and only
while the memo is dense, so its MEMOIZEs land where the machine's would. A record that
repeats the last tensor record byte for byte is taken without a match. Anything else (a
first record that names its globals inline, a frame boundary, a sharded tensor's chunk list,
an unusual integer width) is the opcode loop's.
"""

from __future__ import annotations

import re
import struct
from itertools import chain
from typing import Any

from pytest_ckpt.audit.nodes import Node, tuple_node
from pytest_ckpt.audit.opcodes import Blob, MalformedPickle, TruncatedPickle
from pytest_ckpt.audit.tensor_records import DeferredRecord
from pytest_ckpt.audit.verdict import MemoizedRecord, PickleInterpreter

_GET = rb"(h.|j....)"
_SMALL_INT = rb"(?:K.|M..|J....)"  # BININT1, BININT2, BININT
_INT = rb"(?:K.|M..|J....|\x8a(?:" + rb"|".join(bytes([n]) + b"." * n for n in range(1, 9)) + rb"))"
_BOOL = rb"[\x88\x89]"
# A torch.Size's tuple of ints; the group captures only an empty one (not memoized).
_SHAPE = (
    rb"(?:(\))|" + _SMALL_INT + rb"\x85\x94|" + _SMALL_INT * 2 + rb"\x86\x94|" + _SMALL_INT * 3
    + rb"\x87\x94|\(" + _SMALL_INT + rb"*t\x94)"
)  # fmt: skip
_SIZE_CALL = _GET + _SHAPE + rb"\x85\x94R\x94"  # GET(torch.Size) shape TUPLE1 REDUCE
_FILLED_SHAPE = _SHAPE.replace(rb"(?:(\))|", rb"(?:", 1)  # a non-empty one
_NEWOBJ_STATE = _GET + rb"\)\x81\x94\}\x94\("  # GET(class) () NEWOBJ, {} MARK
_MAX_ITEMS = 8

# A flat object: NEWOBJ, then a state dict of up to 8 plain values, SETITEMS, BUILD. The
# groups are the class's GET, then per item: a torch.Size call's GET and empty shape, or a
# plain GET (all None for an int, None or a boolean, or no item).
_LEAF = rb"(?:" + _INT + rb"|N|" + _BOOL + rb")"  # an item with no group
_ITEM = rb"(?:" + _SIZE_CALL + rb"|" + _GET + rb"|" + _INT + rb"|N|" + _BOOL + rb")"
_FLAT_HEAD = re.compile(_NEWOBJ_STATE, re.DOTALL)
_FLAT_ITEM = re.compile(_ITEM, re.DOTALL)


class FlatMatch:
    """What a match of the regex `_NEWOBJ_STATE (?:_ITEM (?:_ITEM ...)?)? ub` (up to
    `_MAX_ITEMS` items) gives: its 25 groups, start and end. Parsed an item at a time, which
    finds that regex's match (its items parse one way only: no item starts with a byte that
    ends another, or with `u`, so backtracking never finds another) and compiles in a tenth
    of the time: a fresh process pays for the compile."""

    __slots__ = ("_end", "_groups", "_start")

    def __init__(self, groups: tuple[bytes | None, ...], start: int, end: int) -> None:
        self._groups, self._start, self._end = groups, start, end

    def groups(self) -> tuple[bytes | None, ...]:
        return self._groups

    def start(self) -> int:
        return self._start

    def end(self) -> int:
        return self._end

    @classmethod
    def match(cls, data: bytes, pos: int) -> FlatMatch | None:
        """The flat object at `pos`, or None."""
        head = _FLAT_HEAD.match(data, pos)
        if head is None:
            return None
        groups, at = [head.group(1)], head.end()
        for _ in range(_MAX_ITEMS):
            item = _FLAT_ITEM.match(data, at)
            if item is None:
                break
            groups += item.groups()
            at = item.end()
        if not data.startswith(b"ub", at):
            return None
        groups += (None,) * (1 + 3 * _MAX_ITEMS - len(groups))
        return cls(tuple(groups), pos, at + 2)


TENSOR_METADATA = re.compile(
    b"".join(
        [
            _NEWOBJ_STATE,  # 0: TensorStorageMetadata
            _GET + _GET + rb"\)\x81\x94",  # 1 'properties', 2 TensorProperties
            rb"\(" + _GET + _GET + _BOOL + _GET + _BOOL + rb"t\x94b",  # 3-5: its 5-tuple
            _GET + _SIZE_CALL,  # 6 'size', 7 torch.Size, 8 empty shape
            _GET + rb"\]\x94",  # 9 'chunks', EMPTY_LIST
            _NEWOBJ_STATE,  # 10 ChunkStorageMetadata
            _GET + _SIZE_CALL,  # 11 'offsets', 12, 13
            _GET + _SIZE_CALL,  # 14 'sizes', 15, 16 (indices into match.groups())
            rb"uba",  # its SETITEMS BUILD, the list's APPEND
            rb"ub",  # the tensor's SETITEMS BUILD
        ]
    ),
    re.DOTALL,
)
# the groups that are GETs: of a class, a callable, a key or the 5-tuple's values
_TENSOR_GETS = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15)
_FLAT_GETS = tuple(at for at in range(25) if at % 3 != 2)  # the class; each item's two GETs
_FLAT_PLAIN = tuple(range(3, 25, 3))  # an item's plain GET (a key or a value)

# A flat object's shape: its pattern with each item pinned to what one record's were (its
# GETs, but those that read strings where strings vary; all of them where the same GETs
# come again), kept per class GET in the scan's validated reads.
_SHAPE_KEY = "flat-shape"
_MAX_SHAPES = 32  # shapes compiled per scan: a file that keeps clearing them pays no more
_LONG_INDEX = struct.Struct("<xI").unpack
_MISSING = object()
_NEVER = b"\x00never"  # (STOP, then bytes: no record starts with it)
_GET_CODES = b"hj"  # BINGET, LONG_BINGET: where a record starts
_SHORT_BINUNICODE, _MEMOIZE = 0x8C, 0x94
# a planner_data entry: the fqn's GET, then a 1-tuple of it (GET, TUPLE1, MEMOIZE)
_PLANNER_ENTRY = re.compile(_GET + _GET + rb"\x85\x94", re.DOTALL)


def _index(op: bytes) -> int:
    return op[1] if len(op) == 2 else _LONG_INDEX(op)[0]


class DcpRecords:
    """The record recogniser of one scan; `take` is the machine's `take_records` hook."""

    def __init__(self) -> None:
        # the two record kinds' matchers (each has .match(data, pos)), the last taken first
        self.order: list[tuple[Any, tuple[int, ...]]] = [
            (FlatMatch, _FLAT_GETS),
            (TENSOR_METADATA, _TENSOR_GETS),
        ]
        self.taken = 0  # records taken
        self.replays = 0  # records the machine ran on their own, to learn their verdict
        self.entries = 0  # planner_data entries taken
        self.shapes = 0  # flat object shapes compiled (`_shape`)
        # the last tensor record's bytes and verdict: the next is most often the same
        self.last: tuple[bytes, Any] = (_NEVER, None)

    def take(self, machine: PickleInterpreter, pos: int, *, named: bool) -> int | None:
        """The offset after the run of DCP's repeated opcodes that starts here (records, a
        key string and its MEMOIZE, `planner_data` entries: a `state_dict_metadata` or a
        `storage_data` is thousands in a row), each applied as the machine would run it;
        None (nothing changed) when there is none to take."""
        data, memo, stack, clean = machine.data, machine.memo, machine.stack, machine.clean_reads
        size, start, taken = len(data), pos, 0
        while pos < size:
            code = data[pos]
            if code == _SHORT_BINUNICODE:  # a key: the machine's own inline string
                after = machine.inline_string(code, pos, True)
                if after is None:
                    break
                pos = after
                if pos < size and data[pos] == _MEMOIZE:
                    machine.memo_put(len(memo) + machine.memo_offset, stack[-1])
                    pos += 1
                continue
            if code not in _GET_CODES:
                break
            after = pos + (2 if code == 0x68 else 5)
            if not data.startswith(b")\x81", after):  # a NEWOBJ's (), or planner entries
                after = self._planner_entries(machine, pos)
                if after is None:
                    break
                pos = after
                continue
            if machine.memo_sparse:
                break
            raw, known = self.last
            if data.startswith(raw, pos) and clean.get(raw) is known:
                end, strings = pos + len(raw), ()  # the last tensor record's bytes again
            else:
                found = self._record(machine, pos, after)
                if found is None:
                    break
                end, known, strings = found
            writes, type_name, shape, reads = known
            base = len(memo) + machine.memo_offset
            node = Node(type_name)
            node.shape = shape
            memo[base] = node  # the NEWOBJ's own MEMOIZE: the object pushed
            if writes > 1:  # the rest, built when first read or written (`defer_memo`)
                record = MemoizedRecord(pos, end, reads, node, base, strings)
                machine.defer_memo(record, base + 1, base + writes)
            stack.append(node)
            taken += 1
            pos = end
        self.taken += taken
        return None if pos == start else pos

    def _record(
        self, machine: PickleInterpreter, pos: int, after: int
    ) -> tuple[int, tuple[int, str, str, dict[int, Any]], tuple[Any, ...]] | None:
        """(end, verdict, the strings it reads that the verdict's reads do not hold: flat
        index, value pairs) of the clean record at `pos`, whose class GET ends at `after`;
        None when there is none (the opcode loop runs it)."""
        data, clean = machine.data, machine.clean_reads
        pinned = clean.get((_SHAPE_KEY, data[pos:after]))
        if pinned is not None and (found := _by_shape(machine.memo, data, pos, pinned)):
            return found  # a FlatMatch, its key found: without either
        first, second = self.order  # the kind taken last first: they come in runs
        match, gets = first[0].match(data, pos), first[1]
        if match is None:
            match, gets = second[0].match(data, pos), second[1]
            if match is None:
                return None
            self.order.reverse()
        end = match.end()
        if gets is _TENSOR_GETS:  # the same bytes read the same entries: the same verdict
            raw = data[pos:end]
            known = clean.get(raw)
            if known is None:
                learned = self._known(machine, match, gets)
                if learned is None:
                    return None
                known = clean[raw] = learned[0]
            self.last = (raw, known)
            return end, known, ()
        learned = self._known(machine, match, gets)
        if learned is None:
            return None
        known, strings = learned
        return end, known, tuple(chain.from_iterable((strings or {}).items()))

    def _known(
        self, machine: PickleInterpreter, match: Any, gets: tuple[int, ...]
    ) -> tuple[tuple[int, str, str, dict[int, Any]], dict[int, Any] | None] | None:
        """The verdict on a record (see `_learn`) and, for a flat object, the strings its
        plain GETs read (not part of its key: which string changes only labels)."""
        clean, groups, strings = machine.clean_reads, match.groups(), None
        known = clean.get(groups)
        if known is None and gets is _FLAT_GETS:
            key, strings = _string_reads(machine.memo, groups)
            known = clean.get(key)
            if known is not None and strings and self.shapes < _MAX_SHAPES:
                self.shapes += 1  # its strings vary (a fqn): a shape finds its key faster
                clean[(_SHAPE_KEY, groups[0])] = (*_shape(groups, key, known[3]), known)
            known = known or self._learn(machine, key, gets, match)
        elif known is None:
            known = self._learn(machine, groups, gets, match)
        elif gets is _FLAT_GETS and self.shapes < _MAX_SHAPES:
            self.shapes += 1  # the same GETs every time (a _StorageInfo): a shape, all pinned
            clean[(_SHAPE_KEY, groups[0])] = (*_shape(groups, groups, known[3]), known)
        return None if known is None else (known, strings)

    def _planner_entries(self, machine: PickleInterpreter, pos: int) -> int | None:
        """The `planner_data` entries (GET key, GET, TUPLE1, MEMOIZE) that start here, each
        run as the machine runs it; the offset after them, or None (nothing done) when the
        first is not one or a GET of it would raise or build a deferred entry first."""
        data, memo, stack, memo_put = machine.data, machine.memo, machine.stack, machine.memo_put
        start, match, taken = pos, _PLANNER_ENTRY.match, 0
        while (entry := match(data, pos)) is not None:
            key_get, value_get = entry.groups()
            key = memo.get(key_get[1] if len(key_get) == 2 else _LONG_INDEX(key_get)[0], _MISSING)
            value = memo.get(
                value_get[1] if len(value_get) == 2 else _LONG_INDEX(value_get)[0], _MISSING
            )
            if key is _MISSING or value is _MISSING:
                break
            if isinstance(key, DeferredRecord) or isinstance(value, DeferredRecord):
                break
            node = tuple_node([value])
            stack += (key, node)
            memo_put(len(memo) + machine.memo_offset, node)
            taken += 1
            pos = entry.end()
        self.entries += taken
        return None if pos == start else pos

    def _learn(
        self, machine: PickleInterpreter, key: tuple[Any, ...], gets: tuple[int, ...], match: Any
    ) -> tuple[int, str, str, dict[int, Any]] | None:
        """The machine's verdict on this record, run on its own from the memo entries it
        reads: (its memo writes, the type and shape of what it pushes, those entries) when
        clean, kept under `key` until one of them is written again; None when not."""
        memo, groups = machine.memo, match.groups()
        reads: dict[int, Any] = {}
        for at in gets:
            if groups[at] is not None:
                index = _index(groups[at])
                value = memo.get(index, _MISSING)
                if value is _MISSING or isinstance(value, DeferredRecord):
                    return None  # the machine raises there, or builds the entry first
                reads[index] = value
        self.replays += 1
        try:
            replay = machine.replay(
                match.start(), match.end(), reads, len(memo) + machine.memo_offset - len(reads)
            )
        except (MalformedPickle, TruncatedPickle):
            return None  # the opcode loop raises it, where it is
        root = replay.end_value
        if replay.findings or replay.stack or replay.metastack or not isinstance(root, Node):
            return None
        known = (len(replay.memo) - len(reads), root.type_name, root.shape, reads)
        machine.guarded.update(reads)
        machine.clean_reads[key] = machine.clean_reads[groups] = known
        return known


def _string_reads(
    memo: dict[int, Any], groups: tuple[Any, ...]
) -> tuple[tuple[Any, ...], dict[int, Any] | None]:
    """A flat object's key (its groups, each plain GET that reads a string replaced by the
    string's kind) and those strings by memo index."""
    key, strings = list(groups), None
    for at in _FLAT_PLAIN:
        op = groups[at]
        if op is not None:
            index = op[1] if len(op) == 2 else _LONG_INDEX(op)[0]
            value = memo.get(index)
            if type(value) is Blob:
                key[at] = value.kind
                if strings is None:
                    strings = {}
                strings[index] = value
    return tuple(key), strings


def _shape(
    groups: tuple[Any, ...], key: tuple[Any, ...], reads: dict[int, Any]
) -> tuple[Any, tuple[str, ...]]:
    """A flat object (`FlatMatch`) with each item pinned to this record's (`groups`), but
    the GETs whose strings `key` does not hold and the verdict's `reads` do not either
    (captured: which string is no part of the key), and the kinds of those strings: a
    record it matches is one FlatMatch matches, to the same end, with this key once each
    captured GET reads a string of its kind (the items parse one way only: no item starts
    with a byte that ends another). A string GET the verdict read is pinned: its entry is
    guarded (a PUT to it clears the shape with the verdict), so it reads that string while
    both last, and the record's reads already hold it (a DCP key name: `fqn`, `offset`)."""
    items, kinds = [], []
    for at in range(1, 3 * _MAX_ITEMS, 3):
        size_get, empty, plain = groups[at : at + 3]
        if size_get is not None:
            shape = rb"\)" if empty is not None else _FILLED_SHAPE
            items.append(re.escape(size_get) + shape + rb"\x85\x94R\x94")
        elif plain is not None and isinstance(key[at + 2], str) and _index(plain) not in reads:
            items.append(_GET)
            kinds.append(key[at + 2])
        elif plain is not None:
            items.append(re.escape(plain))
        else:
            items.append(_LEAF)
    # the items up to the last with a group; past it, ints, None or booleans, or nothing
    pinned = max(((at - 1) // 3 + 1 for at in range(1, 3 * _MAX_ITEMS) if groups[at]), default=0)
    rest = rb"%s{0,%d}" % (_LEAF, _MAX_ITEMS - pinned)
    head = re.escape(groups[0]) + rb"\)\x81\x94\}\x94\("
    return re.compile(head + b"".join(items[:pinned]) + rest + rb"ub", re.DOTALL), tuple(kinds)


def _by_shape(
    memo: dict[int, Any], data: bytes, pos: int, shape: tuple[Any, ...]
) -> tuple[int, tuple[int, str, str, dict[int, Any]], tuple[Any, ...]] | None:
    """(end, key's verdict, the strings read: flat index, value pairs) of the record at
    `pos` when `shape` matches it and each of its captured GETs reads a string of its kind;
    None otherwise."""
    pattern, kinds, known = shape
    match = pattern.match(data, pos)
    if match is None:
        return None
    strings: list[Any] = []
    groups = match.groups()  # a group per kind (`_shape`)
    for at, kind in enumerate(kinds):
        op = groups[at]
        if op is None:
            return None  # (never: every item with a group is required)
        index = op[1] if len(op) == 2 else _LONG_INDEX(op)[0]
        value = memo.get(index)
        if type(value) is not Blob or value.kind != kind:
            return None
        strings += (index, value)
    return match.end(), known, tuple(strings)
