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
from pytest_ckpt.audit.allowlist import ORDERED_DICT, Allowlist
from pytest_ckpt.audit.findings import collect_findings
from pytest_ckpt.audit.machine import PickleMachine, gc_paused
from pytest_ckpt.audit.nodes import GLOBAL_TYPE, MAX_FINDINGS, Finding, Node
from pytest_ckpt.audit.opcodes import MalformedPickle, Op
from pytest_ckpt.audit.refused_opcodes import RefusedOpcodes
from pytest_ckpt.audit.symbolic import AcceptedOpcodes
from pytest_ckpt.audit.tensor_records import (
    REBUILD_TENSOR_V2,
    DeferredRecord,
    loads_here,
    take_tensor_records,
    tensor_extent,
)

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


_SMALL_ALLOCATION = 1 << 24  # elements: literal sizes an allocating call may ask for
_ORACLE_WORK = 20_000_000  # item visits torch's unpickler may make for us


class OracleGate:
    """Which pickles need torch's own unpickler (`oracle`) for a verdict, and which it may
    not run.

    The static run decides alone only where it mirrors torch exactly: the fast path's tensor
    records (whose storage size, bounds and location it checks), containers of primitives,
    `OrderedDict()` and BUILD of a dict onto one (a state dict's `_metadata`). Any other call,
    object creation, state, set, persistent id, or a SETITEM(S) with an odd count or a
    non-primitive key makes the pickle `exotic`: torch's unpickler decides. It may not run
    (`oracle_blockers`) where a global is not on torch's own allowlist (a user's --allow name
    is code we do not call), nor where an allocating callable gets a size that is not a small
    literal, or where the calls would visit far more items than the pickle holds: those two
    are `resource_problem`s, reported as findings, since the auditor cannot vouch for them.
    """

    def _vet_call(self, func: Any, args: Any, op: Op) -> None:
        name = func.name if isinstance(func, Node) and func.type_name == GLOBAL_TYPE else None
        items = args.items if isinstance(args, Node) else None
        if isinstance(args, Node) and args.type_name == "builtins.list" and not args.appended:
            items = []  # func(*[]): torch calls with whatever REDUCE's argument unpacks to
        plain = op.name == "REDUCE" and (
            (name == ORDERED_DICT and items == [])
            or (name == REBUILD_TENSOR_V2 and not func.findings and self._plain_tensor(items))
        )
        if not plain:
            self.exotic = True
        if isinstance(args, Node):
            self.oracle_work += 1 + sum(
                len(child.children) + child.appended for _label, child in args.children
            )
        if name in self.allow.allocating:
            elements = 1  # what the call may allocate: ints and sizes as its arguments
            for item in items if items is not None else [None]:
                if type(item) is int:
                    elements *= max(item, 1)
                elif items is None or (isinstance(item, Node) and item.type_name == "torch.Size"):
                    elements = _SMALL_ALLOCATION + 1
            if elements > _SMALL_ALLOCATION:
                self.resource_problems.append(
                    f"{name} at offset {op.offset} is called with a size the file chooses "
                    f"(over {_SMALL_ALLOCATION} elements, or not a literal): torch.load "
                    "would allocate it"
                )

    def _op_GLOBAL(self, op: Op) -> None:
        super()._op_GLOBAL(op)  # type: ignore[misc]
        name = self.stack[-1].name
        if name not in self.allow.torch_names:
            self.oracle_blockers.append(f"{name} is not on torch's own allowlist")

    def _op_REDUCE(self, op: Op) -> None:
        if len(self.stack) >= 2:
            self._vet_call(self.stack[-2], self.stack[-1], op)
        super()._op_REDUCE(op)  # type: ignore[misc]

    def _op_NEWOBJ(self, op: Op) -> None:
        if len(self.stack) >= 2:
            self._vet_call(self.stack[-2], self.stack[-1], op)
        super()._op_NEWOBJ(op)  # type: ignore[misc]

    def _op_BUILD(self, op: Op) -> None:
        if len(self.stack) >= 2:
            inst, state = self.stack[-2], self.stack[-1]
            if not (
                isinstance(inst, Node)
                and inst.type_name == ORDERED_DICT
                and isinstance(state, Node)
                and state.type_name == "builtins.dict"
            ):
                self.exotic = True
            if isinstance(state, Node):
                self.oracle_work += 1 + len(state.children)
        super()._op_BUILD(op)  # type: ignore[misc]

    def _vet_items(self, flat: list[Any]) -> None:
        if len(flat) % 2 or any(isinstance(key, Node) for key in flat[::2]):
            self.exotic = True  # torch: an IndexError, or an unhashable key

    def _op_SETITEM(self, op: Op) -> None:
        self._vet_items([*self.stack[-2:-1], None])
        super()._op_SETITEM(op)  # type: ignore[misc]

    def _op_SETITEMS(self, op: Op) -> None:
        self._vet_items(self.stack)
        super()._op_SETITEMS(op)  # type: ignore[misc]

    def _op_EMPTY_SET(self, op: Op) -> None:
        self.exotic = True
        super()._op_EMPTY_SET(op)  # type: ignore[misc]

    def _op_BINPERSID(self, op: Op) -> None:
        """A storage torch.save wrote (a known type, a record of exactly its size, a location
        this host restores) is judged here, like the fast path's; any other is torch's."""
        pid = self.stack[-1] if self.stack else None
        items = pid.items if isinstance(pid, Node) and pid.type_name == "builtins.tuple" else None
        kind = items[1] if items and len(items) == 5 else None
        if isinstance(kind, Node) and kind.type_name != GLOBAL_TYPE:  # an object's .dtype
            self.stack[-1] = Node("torch.storage.TypedStorage")  # is torch's to judge
            self.exotic = True
            return
        super()._op_BINPERSID(op)  # type: ignore[misc]
        storage = self.stack[-1]
        if self.storage_sizes is None or items is None or len(items) != 5 or storage.findings:
            self.exotic = True
            return
        _tag, kind, key, location, numel = items
        element = self.allow.storage_sizes.get(getattr(kind, "name", None) or "")
        if (
            element is None
            or type(numel) is not int
            or not loads_here(location, self.map_location)
            or self.storage_decls.get(key.preview) != (kind.name, numel)
            or self.storage_sizes.get(key.preview) != numel * element
        ):
            self.exotic = True
            return
        self.plain_storages[id(storage)] = (numel, kind.name)

    def _plain_tensor(self, items: list[Any] | None) -> bool:
        """`_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` as
        torch.save writes it, in bounds of a plain storage (what the fast path takes)."""
        if items is None or len(items) != 6:
            return False
        storage, offset, size, stride, requires_grad, hooks = items
        numel, kind = self.plain_storages.get(id(storage), (None, None))
        if numel is None or type(offset) is not int or type(requires_grad) is not bool:
            return False
        if requires_grad and kind not in self.allow.grad_storages:
            return False
        if not (isinstance(hooks, Node) and hooks.type_name == ORDERED_DICT):
            return False
        shapes = []
        for shape in (size, stride):
            if not (isinstance(shape, Node) and shape.type_name == "builtins.tuple"):
                return False
            if shape.items is None or any(type(v) is not int for v in shape.items):
                return False
            shapes.append(shape.items)
        extent = tensor_extent(*shapes)
        return extent >= 0 and offset >= 0 and (extent == 0 or offset + extent <= numel)

    def needs_oracle(self) -> bool:
        return self.exotic

    def oracle_refused_reason(self) -> str | None:
        """Why torch's unpickler may not run over this pickle (the verdict stays the static
        one, with a note), if it may not."""
        return self.oracle_blockers[0] if self.oracle_blockers else None

    def resource_problem(self) -> str | None:
        """Why the auditor will not vouch for this pickle at all: loading it allocates what
        the file says, or does work far beyond its size (a finding, not a note)."""
        if self.resource_problems:
            return self.resource_problems[0]
        if self.oracle_work > _ORACLE_WORK:
            return f"its calls visit {self.oracle_work} items, far more than the pickle holds"
        return None


class PickleInterpreter(OracleGate, AcceptedOpcodes, RefusedOpcodes, PickleMachine):
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
        map_location: str | None = None,
    ) -> None:
        """`storage_sizes` (archive member sizes by storage key) turns on the storage checks
        of a zip checkpoint; `fast_records` lets whole tensor records skip the opcode loop;
        `map_location` is torch.load's (None: storages must load where they were saved)."""
        super().__init__(data, start=start)
        self.map_location = map_location
        self.storage_decls: dict[str, tuple[str, int]] = {}  # key -> first (type, numel)
        # Whether the static run covers all that torch checks (see OracleGate), and why
        # torch's own unpickler may not be run over this pickle, if it may not.
        self.exotic = False
        self.oracle_blockers: list[str] = []  # names torch's unpickler may not call
        self.resource_problems: list[str] = []  # calls the auditor will not run for torch
        self.oracle_work = 0
        # id(storage node) -> (numel, storage type), for the tensors judged here
        self.plain_storages: dict[int, tuple[int, str]] = {}
        self.allow = allowlist
        self.storage_sizes = storage_sizes
        self.fast_records = fast_records
        if fast_records:
            self.take_records = take_tensor_records
        self.loose: list[Finding] = []  # findings with no node to sit on
        self.nodes_with_findings: list[Node] = []
        # id(refused GLOBAL node) -> (that node, the findings its first object took): what
        # each later object built from it copies (`symbolic._take_over`)
        self.built_from: dict[int, tuple[Node, list[Finding]]] = {}
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
        return Finding(
            "unsupported-global", detail, name, fix.advice, False, offset, fix_kind=fix.kind
        )

    def _operation_finding(self, detail: str, offset: int, fix: str, kind: str = "") -> Finding:
        return Finding("unsupported-operation", detail, None, fix, False, offset, fix_kind=kind)

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
        """Why torch would refuse this storage reference of a zip checkpoint, if it would.

        torch loads each key once, on its first reference (when it holds bytes): the record
        must hold exactly numel x element size bytes. Later references reuse it unchecked."""
        sizes = self.storage_sizes
        if sizes is None:
            return None
        first = self.storage_decls.get(key)
        if first is not None and first[1] != 0:
            return None
        self.storage_decls[key] = (type_name, numel)
        size = sizes.get(key)
        if size is None:
            return f"storage {key!r} is not in the archive (data/{key} missing)"
        element = self.allow.storage_sizes.get(type_name)
        if element is None:
            return f"storage {key!r} has unknown storage type {type_name}"
        if numel < 0 or numel * element != size:
            return (
                f"storage {key!r} declares {numel} x {element} bytes but the archive holds "
                f"{size}: torch needs them equal"
            )
        return None
