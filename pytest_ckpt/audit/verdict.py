"""The auditor's verdict: a pickle run symbolically on the pickle machine, mirroring torch's
weights_only unpickler check for check.

Nothing from the file is imported, called or constructed. Each object the pickle would build
is a `Node` that knows its type name and its children; primitives stay plain values (or a
`Blob` preview). Where torch's unpickler would raise, we record a `Finding` on the node
concerned and carry on, so one scan reports every problem. At STOP, findings get their path
from the root (`root['model']['seed_slots.r0c1._extra_state']['seed_state'].stage`).

Mirrored from `torch._weights_only_unpickler.Unpickler.load` (torch 2.10+):
- only its opcodes are accepted (protocol 2 as `torch.save` writes it); any other is a finding;
- GLOBAL must name an allowed global and not a blocked module;
- REDUCE must call an allowed global; NEWOBJ must create an allowed class (or Parameter);
- BUILD only on Tensor, Parameter, OrderedDict or an allowed class's instance;
- APPEND(S) only onto a list; SETITEM(S) only onto a dict, OrderedDict or Counter;
- BINPERSID ids must be ('storage', ...) tuples.

The loop, stack and memo are `machine.PickleMachine`'s (with its inline hot opcodes); what
each opcode builds and when torch refuses it is in `symbolic`; whole tensor records skip the
loop through `tensor_records`. This module holds the findings, the memo's bookkeeping for
the fast path, and the storage checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_ckpt.audit.advice import fix_for_name
from pytest_ckpt.audit.allowlist import Allowlist
from pytest_ckpt.audit.machine import PickleMachine, gc_paused
from pytest_ckpt.audit.nodes import MAX_FINDINGS, Finding, Node, collect_findings
from pytest_ckpt.audit.opcodes import MalformedPickle, Op
from pytest_ckpt.audit.symbolic import AcceptedOpcodes, RefusedOpcodes
from pytest_ckpt.audit.tensor_records import DeferredRecord, take_tensor_records

# The opcodes torch's weights_only unpickler implements; everything else it refuses.
TORCH_OPCODES = frozenset(
    {
        "GLOBAL", "NEWOBJ", "REDUCE", "BUILD", "APPEND", "APPENDS", "SETITEM", "SETITEMS",
        "MARK", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "NONE", "NEWFALSE", "NEWTRUE",
        "EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "BININT", "BININT1", "BININT2",
        "BINFLOAT", "BINUNICODE", "SHORT_BINSTRING", "BINPERSID", "BINGET", "LONG_BINGET",
        "BINPUT", "LONG_BINPUT", "LONG1", "PROTO", "STOP",
    }
)  # fmt: skip

_KEEP_ITEMS = 8  # tuples this short keep their items (persistent ids, REDUCE args)


class PickleInterpreter(AcceptedOpcodes, RefusedOpcodes, PickleMachine):
    """Run one pickle symbolically. `run()` returns the root and every finding."""

    INLINE = True
    ACCEPTED = TORCH_OPCODES

    def __init__(
        self,
        data: bytes,
        allowlist: Allowlist,
        *,
        start: int = 0,
        storage_sizes: Mapping[str, int] | None = None,
        fast_records: bool = True,
    ) -> None:
        """`storage_sizes` (archive member sizes by storage key) turns on the storage checks
        of a zip checkpoint; `fast_records` lets whole tensor records skip the opcode loop."""
        super().__init__(data, start=start)
        self.allow = allowlist
        self.storage_sizes = storage_sizes
        self.fast_records = fast_records
        if fast_records:
            self.take_records = take_tensor_records
        self.loose: list[Finding] = []  # findings with no node to sit on
        self.nodes_with_findings: list[Node] = []
        self.storages = 0  # storage references seen
        self.records_taken = 0  # tensor records the fast path took
        self.clean_reads: dict[tuple[bytes, ...], tuple] = {}  # see tensor_records
        self.guarded: set[int] = set()  # memo entries clean_reads depends on
        self.refused_opcodes: set[str] = set()
        self.flags = self.findings_omitted = 0

    # ---- findings ------------------------------------------------------------------------

    def _flag(self, node: Node | None, finding: Finding) -> None:
        self.flags += 1
        if self.flags > MAX_FINDINGS:  # count the rest: reports stay bounded (nodes.py)
            self.findings_omitted += 1
            return
        if node is None:
            self.loose.append(finding)
            return
        if not node.findings:
            self.nodes_with_findings.append(node)
        node.findings.append(finding)

    def _global_finding(self, name: str, offset: int, detail: str) -> Finding:
        fix = fix_for_name(name)
        return Finding("unsupported-global", detail, name, fix.advice, fix.allowlist_helps, offset)

    def _operation_finding(self, detail: str, offset: int, fix: str) -> Finding:
        return Finding("unsupported-operation", detail, None, fix, False, offset)

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

    def _tuple(self, items: list[Any]) -> Node:
        node = Node("builtins.tuple", items=list(items) if len(items) <= _KEEP_ITEMS else None)
        node.children = [(i, item) for i, item in enumerate(items) if type(item) is Node]
        return node

    # ---- run -----------------------------------------------------------------------------

    def run(self) -> tuple[Any, list[Finding]]:
        """Execute to STOP (with the cyclic garbage collector paused: see `gc_paused`)."""
        with gc_paused():
            return self._run()

    def _run(self) -> tuple[Any, list[Finding]]:
        root = self.execute()
        return root, collect_findings(root, self.loose, self.nodes_with_findings)

    # ---- memo ----------------------------------------------------------------------------

    def memo_put(self, index: int, value: Any) -> None:
        """Every PUT goes through here: a write to an entry validated records read (see
        tensor_records) makes the fast path validate them again."""
        if index in self.guarded:
            self.forget_clean_reads()
        self.memo[index] = value

    def forget_clean_reads(self) -> None:
        """A memo entry tensor records read is written again: validate them afresh."""
        self.clean_reads.clear()
        self.guarded.clear()

    def memo_get(self, index: int, offset: int) -> Any:
        """The memo entry GET reads; a fast-path record's entries are built on first read."""
        if index not in self.memo:
            raise MalformedPickle(f"GET at offset {offset} reads memo {index}, never set")
        value = self.memo[index]
        if type(value) is DeferredRecord:
            self._materialize(value)
            value = self.memo[index]
        return value

    def _materialize(self, record: DeferredRecord) -> None:
        """Replay a fast-path tensor record through the opcode loop, from the memo values it
        read, and put what it built where the record's memo entries still point."""
        replay = PickleInterpreter(
            self.data[record.start : record.end] + b".",
            self.allow,
            storage_sizes=self.storage_sizes,
            fast_records=False,
        )
        replay.memo.update(record.reads)
        tensor, findings = replay._run()
        if findings:  # take_tensor_record takes clean records only
            raise AssertionError(f"tensor record at offset {record.start} was not clean")
        record.tensor.children[:0] = tensor.children  # before anything added since
        for index, value in replay.memo.items():
            if self.memo.get(index) is record:
                self.memo[index] = value

    def storage_problem(self, key: str, type_name: str, numel: int) -> str | None:
        """Why torch would refuse this storage reference of a zip checkpoint, if it would."""
        sizes = self.storage_sizes
        if sizes is None:
            return None
        size = sizes.get(key)
        if size is None:
            return f"storage {key!r} is not in the archive (data/{key} missing)"
        element = self.allow.storage_sizes.get(type_name)
        if element is None:
            return f"storage {key!r} has unknown storage type {type_name}"
        if numel < 0 or numel * element > size:
            return (
                f"storage {key!r} declares {numel} x {element} bytes but the archive holds {size}"
            )
        return None
