"""The records DCP's pickler repeats in `.metadata`, each taken in one regex match.

A `.metadata` is mostly three records per tensor, each some 20-50 opcodes:
- a `TensorStorageMetadata` (NEWOBJ, a state dict: its `TensorProperties` built from a
  5-tuple, its `torch.Size`, a list of one `ChunkStorageMetadata`), after its fqn key;
- in `storage_data`, a `MetadataIndex` and a `_StorageInfo`: a class's NEWOBJ and a state
  dict of at most eight plain values (memo GETs, ints, None, booleans, `torch.Size` calls).

`metadata_proof` runs the machine's checks opcode by opcode on everything else; at a GET it
offers the bytes here. A record is taken only in the shape matched, only when every memo
entry it reads exists and is what the machine's checks need (an allowed class for NEWOBJ and
BUILD, an allowed global for REDUCE), and only when the memo is dense (every MEMOIZE of the
record lands on the next fresh index, as the machine would put it). Its effect is then
exactly the machine's: the same memo entries (by type), the same object pushed. Anything
else (a first record that names its globals inline, a frame boundary, a sharded tensor's
chunk list, an unusual integer width) is left to the opcode loop.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from pytest_ckpt.audit.allowlist import Allowlist
from pytest_ckpt.audit.formats.dcp.metadata_entries import Unproven, newobj_result, reduce_result

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
_NEWOBJ_STATE = _GET + rb"\)\x81\x94\}\x94\("  # GET(class) () NEWOBJ, {} MARK
_MAX_ITEMS = 8

# A flat object: NEWOBJ, then a state dict of up to 8 plain values, SETITEMS, BUILD. The
# groups are the class's GET, then per item: a torch.Size call's GET and empty shape, or a
# plain GET (all None for an int, None or a boolean, or no item).
_ITEM = rb"(?:" + _SIZE_CALL + rb"|" + _GET + rb"|" + _INT + rb"|N|" + _BOOL + rb")"
_ITEMS = b""
for _ in range(_MAX_ITEMS):
    _ITEMS = rb"(?:" + _ITEM + _ITEMS + rb")?"
FLAT_OBJECT = re.compile(_NEWOBJ_STATE + _ITEMS + rb"ub", re.DOTALL)

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
_TENSOR_READS = (1, 3, 4, 5, 6, 9, 11, 14)  # keys and the 5-tuple's values, read as they are

_LONG_INDEX = struct.Struct("<xI").unpack


def _index(op: bytes) -> int:
    return op[1] if len(op) == 2 else _LONG_INDEX(op)[0]


class RecordTaker:
    """Takes records for one proof run, on its memo (see module docstring).

    What a record writes depends only on its GETs' bytes (which memo entries it reads), on
    which of its shapes are empty and on those entries' values: `effects` keeps it by
    `match.groups()`, which holds exactly those, until a PUT may change an entry
    (`memo_written`); a MEMOIZE on a dense memo only ever adds one.
    """

    def __init__(
        self, data: bytes, allow: Allowlist, memo: dict[int, Any], *, enabled: bool = True
    ) -> None:
        self.data, self.allow, self.memo, self.enabled = data, allow, memo, enabled
        self.put_high = -1  # the highest memo index a PUT (not a MEMOIZE) has written
        self.effects: dict[tuple[Any, ...], tuple[tuple[Any, ...], str]] = {}
        self.flat_effects: dict[tuple[Any, ...], tuple[tuple[Any, ...], str]] = {}
        self.order = [(FLAT_OBJECT, self._flat), (TENSOR_METADATA, self._tensor)]
        self.taken = 0

    def memo_written(self, index: int) -> None:
        """A PUT wrote memo `index`: the memo may no longer be dense, and the effects kept
        may have read the entry it replaced."""
        self.put_high = max(self.put_high, index)
        self.effects.clear()
        self.flat_effects.clear()

    def at_get(self, pos: int, stack: list[Any]) -> int | None:
        """The offset after the record that starts at this GET, having applied it; None
        (nothing changed) when there is none to take. Raises Unproven where the machine
        would flag or raise."""
        data = self.data
        after = pos + (2 if data[pos] == 0x68 else 5)
        if (
            data[after : after + 2] != b")\x81"
            or self.put_high >= len(self.memo)
            or not self.enabled
        ):
            return None
        first, second = self.order  # the kind taken last first: they come in runs
        match, validate = first[0].match(data, pos), first[1]
        if match is None:
            match, validate = second[0].match(data, pos), second[1]
            if match is None:
                return None
            self.order.reverse()
        groups = match.groups()
        effect = self.effects.get(groups) or validate(groups)
        writes, node = effect
        memo = self.memo
        base = len(memo)
        memo.update(enumerate(writes, base))  # each MEMOIZE, in order
        stack.append(node)
        self.taken += 1
        return match.end()

    def _read(self, op: bytes) -> Any:
        """The memo entry a GET of the record reads; only entries from before the record
        are looked at (one it made itself is not there yet: Unproven, the loop's job)."""
        index = _index(op)
        if index not in self.memo:
            raise Unproven("GET of a memo entry not set before the record")
        return self.memo[index]

    def _size_call(self, op: bytes, empty: bytes | None, writes: list[Any]) -> None:
        result = reduce_result(self.allow, self._read(op))
        if empty is None:  # a non-empty shape tuple is memoized
            writes.append("builtins.tuple")
        writes += ["builtins.tuple", result]

    def _flat(self, groups: tuple[Any, ...]) -> tuple[tuple[Any, ...], str]:
        """A flat object's effect. Its plain GETs (a MetadataIndex's fqn: another one each
        time) need only their entry to exist; the effect is kept by the rest of the groups."""
        key = (groups[0], groups[1::3], groups[2::3])
        effect = self.flat_effects.get(key)
        if effect is not None:
            for plain_get in groups[3::3]:
                if plain_get is not None:
                    self._read(plain_get)
            return effect
        node = newobj_result(self.allow, self._read(groups[0]))
        writes: list[Any] = [node, "builtins.dict"]
        for at in range(1, len(groups), 3):
            size_get, empty, plain_get = groups[at : at + 3]
            if size_get is not None:
                self._size_call(size_get, empty, writes)
            elif plain_get is not None:
                self._read(plain_get)
        effect = (tuple(writes), node)
        self.effects[groups] = self.flat_effects[key] = effect
        return effect

    def _tensor(self, groups: tuple[Any, ...]) -> tuple[tuple[Any, ...], str]:
        for at in _TENSOR_READS:
            self._read(groups[at])
        node, properties, chunk = (
            newobj_result(self.allow, self._read(groups[at])) for at in (0, 2, 10)
        )
        writes: list[Any] = [node, "builtins.dict", properties, "builtins.tuple"]
        self._size_call(groups[7], groups[8], writes)
        writes += ["builtins.list", chunk, "builtins.dict"]
        self._size_call(groups[12], groups[13], writes)
        self._size_call(groups[15], groups[16], writes)
        effect = (tuple(writes), node)
        self.effects[groups] = effect
        return effect
