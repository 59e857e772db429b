"""The auditor's verdict: a pickle run symbolically on the pickle machine under torch's
weights_only rules (`torch_rules.TorchRules`), reporting every problem in one scan.

What this class adds to the rules: the opcodes torch refuses are flagged once each
(`unaccepted`, the machine calls it before they run) and still run with their pickle
semantics, so that one scan goes on to find every other problem; whole tensor records skip
the loop through `tensor_records` (the memo's bookkeeping for that fast path is here); at
STOP, findings get their path from the root (`findings.collect_findings`).
"""

from __future__ import annotations

import bisect
import re
from array import array
from collections.abc import Mapping
from typing import Any

from pytest_ckpt.audit.allowlist import Allowlist
from pytest_ckpt.audit.findings import collect_findings
from pytest_ckpt.audit.machine import gc_paused
from pytest_ckpt.audit.nodes import GLOBAL_TYPE, Finding, Node, key_label, tuple_node
from pytest_ckpt.audit.object_runs import OBJECT_START, take_object_runs
from pytest_ckpt.audit.opcodes import Blob, MalformedPickle, Op
from pytest_ckpt.audit.record_grammar import RECORD_START
from pytest_ckpt.audit.tensor_records import DeferredRecord, take_tensor_records
from pytest_ckpt.audit.torch_rules import TorchRules, global_finding


def _operand_text(value: Any) -> str:
    """A STACK_GLOBAL operand as text: strings as they are, anything else by its type (a
    node's repr would put a memory address in the report)."""
    if isinstance(value, Blob):
        return str(value.preview)
    if isinstance(value, Node):
        return f"<{value.type_name}>"
    return repr(value)


# where a fast path may start: a tensor record, or an object run (`object_runs`)
_FAST_RUN_START = re.compile(RECORD_START.pattern + b"|" + OBJECT_START, re.DOTALL)


def take_fast_runs(interp: PickleInterpreter, pos: int, *, named: bool) -> int | None:
    """The machine's `take_records`: tensor records, else (once a refused class has built
    an object) later objects of refused classes; None when neither starts here."""
    after = take_tensor_records(interp, pos, named=named)
    if after is None and interp.built_from:
        after = take_object_runs(interp, pos, named=named)
    return after


class MemoizedRecord(DeferredRecord):
    """A deferred record whose memo writes are MEMOIZEs (protocol 4: DCP's `.metadata`):
    its object is memo entry `base`, and its replay writes there, past the entries it read:
    `reads`, shared by the records of one verdict, and `strings`, this record's own (flat
    index, value pairs; DCP's fqns)."""

    __slots__ = ("base", "strings")

    def __init__(
        self,
        start: int,
        end: int,
        reads: dict[int, Any],
        node: Node,
        base: int,
        strings: tuple[Any, ...] = (),
    ) -> None:
        self.start, self.end, self.reads, self.tensor = start, end, reads, node
        self.base, self.strings = base, strings

    def all_reads(self) -> dict[int, Any]:
        """Every memo entry the record read, with the value it had then."""
        if not self.strings:
            return self.reads
        reads = dict(self.reads)
        reads.update(zip(self.strings[::2], self.strings[1::2], strict=True))
        return reads


class PickleInterpreter(TorchRules):
    """Run one pickle symbolically. `run()` returns the root and every finding."""

    INLINE = True

    def __init__(
        self,
        data: bytes,
        allowlist: Allowlist,
        *,
        start: int = 0,
        storage_sizes: Mapping[str, int] | None = None,
        fast_records: bool = True,
        map_location: str | None = None,
    ) -> None:
        """`fast_records` lets whole tensor records, and later objects of a refused class,
        skip the opcode loop (the rest: see `TorchRules`)."""
        super().__init__(
            data, allowlist, start=start, storage_sizes=storage_sizes, map_location=map_location
        )
        self.fast_records = fast_records
        if fast_records:
            self.take_records = take_fast_runs
            self.records_hint = _FAST_RUN_START.match
        self.records_taken = 0  # tensor records the fast path took
        self.objects_taken = 0  # objects of refused classes it took (`object_runs`)
        self.object_runs: dict[bytes, Any] = {}  # what replays learned (or None), by opcodes
        self.object_learns = 0  # those replays
        # validated reads, by their GETs (tensor_records) or a record (DCP metadata_records)
        self.clean_reads: dict[Any, tuple[Any, ...]] = {}
        self.guarded: set[int] = set()  # memo entries clean_reads depends on
        self.refused_opcodes: set[str] = set()
        self.memo_sparse = False  # a PUT past the memo's end: MEMOIZE may overwrite
        # memo indices with no entry yet, each span [start, stop) a record's (`defer_memo`,
        # in index order; the record None once its entries are written), and the last stop
        self.span_starts, self.span_stops = array("q"), array("q")
        self.span_records: list[MemoizedRecord | None] = []
        self.spans_end = 0
        self.end_value: Any = None  # a replay's root (`replay`)
        self.findings: list[Finding] = []  # a replay's findings (`replay`)

    # ---- run -----------------------------------------------------------------------------

    def run(self) -> tuple[Any, list[Finding]]:
        """Execute to STOP (with the cyclic garbage collector paused: see `gc_paused`)."""
        with gc_paused():
            return self._run()

    def _run(self) -> tuple[Any, list[Finding]]:
        root = self.execute()
        return root, collect_findings(root, self.loose, self.nodes_with_findings)

    def unaccepted(self, op: Op) -> None:
        """One finding per refused opcode name, not one per use; the opcode still runs."""
        if op.name in self.refused_opcodes:
            return
        self.refused_opcodes.add(op.name)
        self.loose.append(
            Finding(
                "unsupported-opcode",
                f"opcode {op.name} at offset {op.offset} is not accepted by torch's "
                "weights_only unpickler (it reads pickle protocol 2, as torch.save "
                "writes it)",
                None,
                "re-save the checkpoint with torch.save (default pickle protocol)",
                False,
                op.offset,
            )
        )

    # ---- memo ----------------------------------------------------------------------------

    def memo_put(self, index: int, value: Any) -> None:
        """Every PUT goes through here: a write to an entry validated records read (see
        tensor_records) makes the fast path validate them again; one to an index a record
        left unwritten builds that record's entries first (`defer_memo`)."""
        if index < self.spans_end and index not in self.memo:
            self._write_span(index)
        if index in self.guarded:
            self.forget_clean_reads()
        if index > len(self.memo) + self.memo_offset:
            self.memo_sparse = True
            self.memo_past_end(index)
        self.memo[index] = value

    def memo_past_end(self, index: int) -> None:
        """A PUT past the memo's end (torch's memo is a dict: nothing to say; DCP's reader
        is Python's, whose memo is an array)."""

    def defer_memo(self, record: MemoizedRecord, first: int, stop: int) -> None:
        """A record's MEMOIZEs [first, stop), past the end of a dense memo, left without
        entries: MEMOIZE counts them (`memo_offset`), and the first GET or PUT of one
        replays the record (`_write_span`). A `.metadata` is some 80,000 such entries: a
        dict entry and an int each, and the pages they fill, were a fifth of its audit."""
        self.span_starts.append(first)
        self.span_stops.append(stop)
        self.span_records.append(record)
        self.memo_offset += stop - first
        self.spans_end = stop

    def _write_span(self, index: int) -> bool:
        """Write the entries of the span that holds `index`; False if none does."""
        at = bisect.bisect_right(self.span_starts, index) - 1
        record = self.span_records[at] if at >= 0 else None
        if record is None or index >= self.span_stops[at]:
            return False
        self.span_records[at] = None
        first, stop = self.span_starts[at], self.span_stops[at]
        replay = self._materialize(record)
        for entry in range(first, stop):  # (none written since: a write builds them first)
            self.memo[entry] = replay.memo[entry]
        self.memo_offset -= stop - first
        return True

    def forget_clean_reads(self) -> None:
        """A memo entry tensor records read is written again: validate them afresh."""
        self.clean_reads.clear()
        self.guarded.clear()

    def memo_get(self, index: int, offset: int) -> Any:
        """The memo entry GET reads; a fast-path record's entries are built on first read."""
        if index not in self.memo and not (index < self.spans_end and self._write_span(index)):
            raise MalformedPickle(f"GET at offset {offset} reads memo {index}, never set")
        value = self.memo[index]
        if isinstance(value, DeferredRecord):
            self._materialize(value)
            value = self.memo[index]
        return value

    def new_replay(self, data: bytes) -> PickleInterpreter:
        """A run of this semantics, with no fast path, over `data` (a record's bytes)."""
        return PickleInterpreter(
            data, self.allow, storage_sizes=self.storage_sizes, fast_records=False
        )

    def replay(
        self, start: int, end: int, reads: dict[int, Any], memo_offset: int = 0
    ) -> PickleInterpreter:
        """`data[start:end]` run on its own by this semantics, from the memo entries it
        reads; its MEMOIZEs write `memo_offset` further on (where the whole run wrote them).
        The run leaves its root in `replay.end_value`, its findings in `replay.findings`."""
        replay = self.new_replay(self.data[start:end] + b".")
        replay.memo.update(reads)
        replay.memo_offset = memo_offset
        replay.end_value, replay.findings = replay._run()
        return replay

    def _materialize(self, record: DeferredRecord) -> PickleInterpreter:
        """Replay a fast-path record through the opcode loop, from the memo values it read,
        and put what it built where the record's memo entries still point (the replay)."""
        if isinstance(record, MemoizedRecord):
            reads = record.all_reads()
            replay = self.replay(record.start, record.end, reads, record.base - len(reads))
        else:
            replay = self.replay(record.start, record.end, record.reads)
        if replay.findings:  # the fast paths take clean records only
            raise AssertionError(f"record at offset {record.start} was not clean")
        node = record.tensor  # its children first, before anything added since
        node.children = [*replay.end_value.children, *node.children]
        for index, value in replay.memo.items():
            if self.memo.get(index) is record:
                self.memo[index] = value
        return replay

    # ---- the opcodes torch refuses: flagged by `unaccepted`, run to find more ------------

    _op_STRING = _op_BINSTRING = _op_UNICODE = _op_SHORT_BINUNICODE = TorchRules._op_BINUNICODE
    _op_BINUNICODE8 = _op_BINBYTES = _op_SHORT_BINBYTES = _op_BINBYTES8 = TorchRules._op_BINUNICODE
    _op_BYTEARRAY8 = TorchRules._op_BINUNICODE

    def _op_POP(self, op: Op) -> None:
        self._pop(op)

    def _op_POP_MARK(self, op: Op) -> None:
        self._pop_mark(op)

    def _op_DUP(self, op: Op) -> None:
        self._push(self._top(op))

    def _op_PUT(self, op: Op) -> None:
        self.memo_put(int(op.arg), self._top(op))

    def _op_GET(self, op: Op) -> None:
        self._push(self.memo_get(int(op.arg), op.offset))

    def _op_LIST(self, op: Op) -> None:
        node = Node("builtins.list")
        for i, item in enumerate(self._pop_mark(op)):
            node.add_child(i, item)
        self._push(node)

    def _op_DICT(self, op: Op) -> None:
        node = Node("builtins.dict")
        flat = self._pop_mark(op)
        for i in range(0, len(flat) - 1, 2):
            node.add_child(key_label(flat[i]), flat[i + 1])
        self._push(node)

    def _op_FROZENSET(self, op: Op) -> None:
        node = Node("builtins.frozenset")
        for item in self._pop_mark(op):
            node.add_child("[...]", item)
        self._push(node)

    def _op_ADDITEMS(self, op: Op) -> None:
        items = self._pop_mark(op)
        target = self._top(op)
        if isinstance(target, Node):
            for item in items:
                target.add_child("[...]", item)

    def _op_STACK_GLOBAL(self, op: Op) -> None:
        name, module = self._pop(op), self._pop(op)
        text = [_operand_text(v) for v in (module, name)]
        self._op_GLOBAL(op._replace(arg=(text[0], text[1])))

    def _op_EXT1(self, op: Op) -> None:
        node = Node(GLOBAL_TYPE, name=f"<extension {op.arg}>")
        self._flag(node, global_finding(node.name or "", op.offset, f"extension code {op.arg}"))
        self._push(node)

    _op_EXT2 = _op_EXT4 = _op_EXT1

    def _op_NEWOBJ_EX(self, op: Op) -> None:
        kwargs = self._pop(op)
        self._op_NEWOBJ(op)
        self.stack[-1].add_child("(kwargs)", kwargs)

    def _op_INST(self, op: Op) -> None:
        args = self._pop_mark(op)
        self._op_GLOBAL(op)  # INST's argument is GLOBAL's: the two lines
        self._push(tuple_node(args))
        self._op_NEWOBJ(op)

    def _op_OBJ(self, op: Op) -> None:
        items = self._pop_mark(op)
        if not items:
            raise MalformedPickle(f"OBJ at offset {op.offset} without a class")
        self.stack.append(items[0])
        self._push(tuple_node(items[1:]))
        self._op_NEWOBJ(op)

    def _op_PERSID(self, op: Op) -> None:
        self._push(tuple_node([op.arg]))
        self._op_BINPERSID(op)

    def _op_NEXT_BUFFER(self, op: Op) -> None:
        self._push(Node("pickle.PickleBuffer"))

    def _op_READONLY_BUFFER(self, op: Op) -> None:
        self._top(op)
