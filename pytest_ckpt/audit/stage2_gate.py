"""Stage two's gate: which pickles need torch's own unpickler (`oracle`) for a verdict, and
which it may not run over.

The rules (`torch_rules.TorchRules`) call the gate explicitly at each opcode it watches (a
GLOBAL, a call, a BUILD, items set, a set, a storage); the gate only watches and never
changes what the rules build or flag. `audit_file` asks it, after a clean static pass,
whether stage two runs (`needs_oracle`), whether it may (`oracle_refused_reason`), and
whether the file is beyond what the auditor vouches for at all (`resource_problem`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_ckpt.audit.allowlist import ORDERED_DICT, Allowlist
from pytest_ckpt.audit.nodes import GLOBAL_TYPE, Node
from pytest_ckpt.audit.plain_calls import plain_call
from pytest_ckpt.audit.tensor_records import REBUILD_TENSOR_V2, loads_here, tensor_extent

_SMALL_ALLOCATION = 1 << 24  # elements: literal sizes an allocating call may ask for
_ORACLE_WORK = 20_000_000  # item visits torch's unpickler may make for us


class OracleGate:
    """The static run decides alone only where it mirrors torch exactly: the fast path's tensor
    records (whose storage size, bounds and location it checks), containers of primitives,
    `OrderedDict()`, BUILD of a dict onto one (a state dict's `_metadata`), an empty set, and
    the calls `plain_calls` models (Size, device, complex, bytes, bytearray, set, Counter,
    Parameters of plain tensors). Any other call, object creation, state, persistent id, or
    a SETITEM(S) with an odd count or a non-primitive key makes the pickle `exotic`: torch's
    unpickler decides. It may not run
    (`oracle_blockers`) where a global is not on torch's own allowlist (a user's --allow name
    is code we do not call), nor where an allocating callable gets a size that is not a small
    literal, or where the calls would visit far more items than the pickle holds: those two
    are `resource_problem`s, reported as findings, since the auditor cannot vouch for them.
    """

    def __init__(
        self,
        allowlist: Allowlist,
        storage_sizes: Mapping[str, int] | None,
        storage_decls: Mapping[str, tuple[str, int]],
        map_location: str | None,
    ) -> None:
        """`storage_decls` is the rules' own record of each storage key's first (type,
        numel), read here as the rules fill it."""
        self.allow = allowlist
        self.storage_sizes = storage_sizes
        self.storage_decls = storage_decls
        self.map_location = map_location
        self.exotic = False
        self.oracle_blockers: list[str] = []  # names torch's unpickler may not call
        self.resource_problems: list[str] = []  # calls the auditor will not run for torch
        self.oracle_work = 0
        # id(storage node) -> (numel, storage type), for the tensors judged here
        self.plain_storages: dict[int, tuple[int, str]] = {}
        # id(tensor node) -> that node, for plain tensors whose dtype can require grad (the
        # fast path's records too: `tensor_records` fills it), for `_rebuild_parameter`
        self.grad_tensors: dict[int, Node] = {}
        self._made_grad_tensor = False  # the last call builds one of those

    # ---- what the rules report -----------------------------------------------------------

    def global_named(self, name: str | None) -> None:
        """A GLOBAL: torch's unpickler may only ever push what torch itself allows."""
        if name not in self.allow.torch_names:
            self.oracle_blockers.append(f"{name} is not on torch's own allowlist")

    def call(self, func: Any, args: Any, offset: int, *, reduce: bool) -> None:
        """A call of `func` on `args` (`func(*args)` when `reduce`, else an object creation,
        `func.__new__(func, *args)`), before it runs; `made` follows a call with its result."""
        name = func.name if isinstance(func, Node) and func.type_name == GLOBAL_TYPE else None
        items = args.items if isinstance(args, Node) else None
        if isinstance(args, Node) and args.type_name == "builtins.list" and not args.appended:
            items = []  # func(*[]): torch calls with whatever the argument unpacks to
        self._made_grad_tensor = False
        if not self.exotic:  # once exotic, stage 2 runs whatever the rest holds
            self.exotic = not self._plain_call(func, name, items, reduce)
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
                    f"{name} at offset {offset} is called with a size the file chooses "
                    f"(over {_SMALL_ALLOCATION} elements, or not a literal): torch.load "
                    "would allocate it"
                )

    def made(self, result: Node) -> None:
        """What the rules built from the call just reported to `call`."""
        if self._made_grad_tensor:
            self.grad_tensors[id(result)] = result

    def _plain_call(
        self, func: Node, name: str | None, items: list[Any] | None, reduce: bool
    ) -> bool:
        """Is this call one the static run judges exactly as torch does (`plain_calls`)?
        Asked only while everything built so far was plain."""
        if items is None or name is None or func.findings or name not in self.allow.torch_names:
            return False
        if name == REBUILD_TENSOR_V2:
            kind = self._plain_tensor(items) if reduce else None
            self._made_grad_tensor = kind in self.allow.grad_storages
            return kind is not None
        if name == ORDERED_DICT:
            return reduce and items == []
        first = items[0] if items else None
        grad_capable = self.grad_tensors.get(id(first)) is first is not None
        return plain_call(name, items, reduce, grad_capable)

    def build(self, inst: Any, state: Any) -> None:
        """A BUILD of `state` onto `inst`, before it runs."""
        if not (
            isinstance(inst, Node)
            and inst.type_name == ORDERED_DICT
            and isinstance(state, Node)
            and state.type_name == "builtins.dict"
        ):
            self.exotic = True
        if isinstance(state, Node):
            self.oracle_work += 1 + len(state.children)

    def items_set(self, flat: list[Any]) -> None:
        """SETITEM(S) of `flat` (keys and values), before it runs."""
        if len(flat) % 2 or any(isinstance(key, Node) for key in flat[::2]):
            self.exotic = True  # torch: an IndexError, or an unhashable key

    def set_made(self) -> None:
        """An empty set: plain. torch accepts no opcode that adds to it (each is refused by
        name, a finding), and as a key or an argument it is judged there."""

    def storage_is_torchs(self, pid: Any) -> bool:
        """A storage id whose type is an object (an object's `.dtype`), not a global: torch's
        to judge alone; the rules then push a plain storage and check nothing."""
        items = pid.items if isinstance(pid, Node) and pid.type_name == "builtins.tuple" else None
        kind = items[1] if items and len(items) == 5 else None
        if isinstance(kind, Node) and kind.type_name != GLOBAL_TYPE:
            self.exotic = True
            return True
        return False

    def storage(self, pid: Any, storage: Node) -> None:
        """A storage torch.save wrote (a known type, a record of exactly its size, a location
        this host restores) is judged here, like the fast path's; any other is torch's."""
        items = pid.items if isinstance(pid, Node) and pid.type_name == "builtins.tuple" else None
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

    def _plain_tensor(self, items: list[Any]) -> str | None:
        """`_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` as
        torch.save writes it, in bounds of a plain storage (what the fast path takes): the
        storage type's name, or None."""
        if len(items) != 6:
            return None
        storage, offset, size, stride, requires_grad, hooks = items
        numel, kind = self.plain_storages.get(id(storage), (None, None))
        if numel is None or type(offset) is not int or type(requires_grad) is not bool:
            return None
        if requires_grad and kind not in self.allow.grad_storages:
            return None
        if not (isinstance(hooks, Node) and hooks.type_name == ORDERED_DICT):
            return None
        shapes = []
        for shape in (size, stride):
            if not (isinstance(shape, Node) and shape.type_name == "builtins.tuple"):
                return None
            if shape.items is None or any(type(v) is not int for v in shape.items):
                return None
            shapes.append(shape.items)
        extent = tensor_extent(*shapes)
        in_bounds = extent >= 0 and 0 <= offset < 1 << 63  # torch reads it as an int64
        in_bounds = in_bounds and (extent == 0 or offset + extent <= numel)
        return kind if in_bounds else None

    # ---- what audit_file asks ------------------------------------------------------------

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
