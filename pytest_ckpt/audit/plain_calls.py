"""Which calls of torch's allowlist the static run judges alone, exactly as torch would.

torch.save writes a few calls into ordinary files: `torch.Size((2, 3))`, `torch.device("cpu")`,
`complex(1.0, 2.0)`, `_codecs.encode("ab", "latin1")` (bytes, protocol 2), `bytearray(bytes)`,
`set([1, 2])`, `Counter({...})`, `_rebuild_parameter(tensor, True, OrderedDict())`. Sending a
whole state dict through torch's pure-Python unpickler for one of them costs more than the
load it guards (issue 20), so each is judged here, and only where its outcome is fully
determined by what the static run knows:

- `torch.Size`, `torch.device`, `complex`, `_codecs.encode` (only with the literal encodings
  torch.save writes, never a codec lookup by a name the file chooses) and `bytearray` of a
  string are side-effect-free and allocate no more than their (short, complete) arguments:
  they are called *for real*, the same object torch's unpickler would call (read from its
  `_get_allowed_globals()`), with the same arguments, rebuilt here only from primitives the
  machine decoded (ints, floats, bools, None, complete strings, short tuples of them). Success
  is "plain"; any exception is not, and torch's unpickler (stage 2) then gives its message.
- `set`, `Counter`, `bytearray(bytes)` and the Parameter rebuilds are reasoned about: the
  argument's kind decides (a list of primitives always hashes; a dict's keys were checked as
  it was filled; a Parameter needs a plain tensor, a bool, and a dtype that can require grad).

Anything else (creating an object from a function, lists whose items are not known, objects from the
file's own calls as arguments) is not judged here. The caller (`stage2_gate.OracleGate`)
only asks while every object built so far was plain, so a `Node` of a known type here is
one built by a plain call.
"""

from __future__ import annotations

import functools
from typing import Any

from pytest_ckpt.audit.allowlist import ORDERED_DICT, TENSOR
from pytest_ckpt.audit.nodes import Node
from pytest_ckpt.audit.opcodes import Blob

# Called for real, on primitives only: constructors that neither allocate past their
# arguments' size nor touch anything outside the object they return.
_CALLED = frozenset(("torch.Size", "torch.device", "builtins.complex"))
_LITERAL_ENCODINGS = frozenset(("latin1", "latin-1"))  # what protocol 2 writes for bytes
_MAX_PARTS = 64  # values rebuilt per call: memoized tuples of tuples cannot blow up
_REBUILD_PARAMETER = "torch._utils._rebuild_parameter"
_REBUILD_PARAMETER_WITH_STATE = "torch._utils._rebuild_parameter_with_state"


class _NotPrimitive(Exception):
    """An argument the static run does not know in full."""


def _value(item: Any, budget: list[int]) -> Any:
    """The Python value torch's unpickler would hold for `item`; raises _NotPrimitive."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _NotPrimitive
    if item is None or type(item) in (int, float, bool):
        return item
    if type(item) is Blob and item.kind == "str" and item.complete:
        return item.preview
    if type(item) is Node and item.type_name == "builtins.tuple" and item.items is not None:
        return tuple(_value(part, budget) for part in item.items)
    raise _NotPrimitive


def primitive_args(items: list[Any]) -> tuple[Any, ...] | None:
    """The call's arguments as Python values, or None if any is not a known primitive."""
    try:
        budget = [_MAX_PARTS]
        return tuple(_value(item, budget) for item in items)
    except _NotPrimitive:
        return None


@functools.cache
def _torch_callable(name: str) -> Any:
    """The object torch's weights_only unpickler pushes for GLOBAL `name`."""
    from torch._weights_only_unpickler import _get_allowed_globals

    return _get_allowed_globals()[name]


def _succeeds(name: str, args: tuple[Any, ...], reduce: bool) -> bool:
    """Call what torch calls, as its call (`func(*args)`) or object creation
    (`cls.__new__(cls, *args)`) does; any exception means torch must judge it."""
    func = _torch_callable(name)
    try:
        func(*args) if reduce else func.__new__(func, *args)
    except Exception:  # torch raises the same from the same call: stage 2 reports it
        return False
    return True


def _plain_parameter(items: list[Any], grad_capable: bool) -> bool:
    """`_rebuild_parameter(data, requires_grad, hooks[, state])` as torch.save writes it:
    `Parameter(data, requires_grad)` on a plain tensor (only float and complex dtypes may
    require grad), hooks an OrderedDict, and no state to set attributes from."""
    data, requires_grad, hooks = items[:3]
    state_ok = len(items) == 3 or items[3] is None or _empty(items[3], "builtins.dict")
    return (
        state_ok
        and type(data) is Node
        and data.type_name == TENSOR
        and not data.findings
        and type(requires_grad) is bool
        and (grad_capable or not requires_grad)
        and type(hooks) is Node
        and hooks.type_name == ORDERED_DICT
    )


def _empty(item: Any, type_name: str) -> bool:
    return type(item) is Node and item.type_name == type_name and not item.appended


def _holds_primitives(item: Any) -> bool:
    """A list the pickle filled with primitives and tuples of them only (every one hashes;
    its primitive items are not kept, its objects are its `children`)."""
    return (
        type(item) is Node
        and item.type_name == "builtins.list"
        and all(
            child.type_name == "builtins.tuple" and primitive_args([child]) is not None
            for _label, child in item.children
        )
    )


def plain_call(name: str | None, items: list[Any], reduce: bool, grad_capable: bool) -> bool:
    """Does torch's unpickler surely succeed calling allow-listed `name` on `items` (a call
    when `reduce`, else an object creation, `cls.__new__`)? `grad_capable`: the first item
    is a tensor whose dtype can require grad. False means "not judged here", not "refused"."""
    if name in _CALLED:
        args = primitive_args(items)
        return args is not None and _succeeds(name, args, reduce)
    if not reduce:
        return False
    if name == "_codecs.encode":
        args = primitive_args(items)
        return (
            args is not None
            and len(args) == 2
            and args[1] in _LITERAL_ENCODINGS
            and _succeeds(name, args, reduce)
        )
    if name == "builtins.bytearray":
        if len(items) == 1 and type(items[0]) is Node:
            return items[0].type_name == "builtins.bytes"  # made by a plain _codecs.encode
        args = primitive_args(items)
        return (
            args is not None
            and len(args) == 2
            and type(args[0]) is str
            and args[1] in _LITERAL_ENCODINGS
            and _succeeds(name, args, reduce)
        )
    if name == "builtins.set":
        return not items or (len(items) == 1 and _holds_primitives(items[0]))
    if name == "collections.Counter":
        return not items or (len(items) == 1 and type(items[0]) is Node and (
            items[0].type_name == "builtins.dict" or _holds_primitives(items[0])
        ))  # fmt: skip
    if name == _REBUILD_PARAMETER:
        return len(items) == 3 and _plain_parameter(items, grad_capable)
    if name == _REBUILD_PARAMETER_WITH_STATE:
        return len(items) == 4 and _plain_parameter(items, grad_capable)
    return False
