"""Rebuild a checkpoint that weights_only refuses as primitives and tensors, statically.

The pickle runs on the auditor's pickle machine (`audit.machine`) with concrete semantics,
not on Python's unpickler: GLOBAL only names things, and the only callables ever invoked are
torch's weights_only allowlist (OrderedDict, set, torch.Size, ...) and our own converters.
What the file would have built becomes what the rules of `migrate.rules` say (an Enum member
its value, an object the dict of its state, a datetime an ISO string, ...); tensors are
rebuilt by torch's own functions (`migrate.calls`) on storages read as torch reads them
(`migrate.storages`). The final pass (`migrate.finish`) writes the markers out.

Each conversion is reported with its path. Anything else (a call of os.system or of any
function, an object built from constructor arguments or a non-dict state, an extension
code) is refused, by path, and then the whole file is refused: a partial conversion is not
written. Exceptions from ill-formed pickles (the stack or memo) are "unreadable" (exit 2).
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field
from typing import Any

from pytest_ckpt.audit.advice import is_dangerous
from pytest_ckpt.audit.allowlist import load_allowlist
from pytest_ckpt.audit.formats.torch_archive import Unreadable, open_checkpoint
from pytest_ckpt.audit.machine import PickleMachine
from pytest_ckpt.audit.opcodes import Blob, MalformedPickle, Op, TruncatedPickle
from pytest_ckpt.errors import ConversionRefused
from pytest_ckpt.migrate import objects, rules
from pytest_ckpt.migrate.calls import TorchRefuses, call_allowed, one_line
from pytest_ckpt.migrate.finish import Finisher
from pytest_ckpt.migrate.markers import Converted, GlobalRef, ObjectRecord, Refused, SetList
from pytest_ckpt.migrate.storages import ArchiveStorages, StorageRefused


@dataclass(slots=True)
class Conversion:
    result: Any
    conversions: list[str] = field(default_factory=list)


def _text(value: Any) -> Any:
    if isinstance(value, Blob):
        if not value.complete:
            raise MalformedPickle("string too long to convert faithfully")
        return value.preview
    return value


class ConcreteMachine(PickleMachine):
    """The pickle machine with concrete semantics: each opcode builds a real value (or one
    of the markers of `migrate.markers`, for what the final pass converts or refuses).

    It runs every opcode through the decoder (no INLINE path): its strings are whole, not
    previews, and an ill-formed pickle fails as it always has (an IndexError or KeyError from
    the stack or memo, reported by `convert_file` as a malformed pickle).
    """

    def __init__(self, checkpoint, storages: ArchiveStorages | None, budget: int) -> None:
        import torch._weights_only_unpickler as wo

        super().__init__(checkpoint.pickle, start=checkpoint.pickle_start)
        self.allowed = {**wo._get_allowed_globals(), **wo._get_user_allowed_globals()}
        self.allowlist = load_allowlist()
        self.checkpoint = checkpoint
        self.storages = storages
        self.budget = budget  # bytes torch's constructors may still allocate from arguments
        self.refused: list[Refused] = []

    def unsupported(self, op: Op) -> Exception:
        return MalformedPickle(f"opcode {op.name} at offset {op.offset} is not supported")

    def stop(self, op: Op) -> Any:
        return self.stack.pop()

    # stack and memo
    def pop_mark(self) -> list[Any]:
        items, self.stack = self.stack, self.metastack.pop()
        return items

    def _op_POP(self, op: Op) -> None:
        self.stack.pop()

    def _op_POP_MARK(self, op: Op) -> None:
        self.pop_mark()

    def _op_DUP(self, op: Op) -> None:
        self.stack.append(self.stack[-1])

    def _put(self, index: int) -> None:
        self.memo[index] = self.stack[-1]

    def _op_BINPUT(self, op: Op) -> None:
        self._put(op.arg)

    _op_LONG_BINPUT = _op_BINPUT

    def _op_PUT(self, op: Op) -> None:
        self._put(int(op.arg))

    def _op_MEMOIZE(self, op: Op) -> None:
        self._put(len(self.memo))

    def _op_BINGET(self, op: Op) -> None:
        self.stack.append(self.memo[int(op.arg)])

    _op_LONG_BINGET = _op_GET = _op_BINGET

    # strings and bytes (numbers, None and booleans are the machine's)
    def _full(self, blob: Blob) -> bytes:
        return bytes(self.checkpoint.pickle[blob.start : blob.start + blob.length])

    def _op_BINUNICODE(self, op: Op) -> None:
        if isinstance(op.arg, Blob) and op.arg.kind == "str":
            self.stack.append(self._full(op.arg).decode("utf-8", "surrogatepass"))
        else:  # text-form opcodes (protocol 0) keep their value in the preview
            self.stack.append(_text(op.arg))

    _op_SHORT_BINUNICODE = _op_BINUNICODE8 = _op_UNICODE = _op_BINUNICODE

    def _op_SHORT_BINSTRING(self, op: Op) -> None:
        raw = self._full(op.arg) if isinstance(op.arg, Blob) and op.arg.kind == "bytes" else b""
        self.stack.append(raw.decode("utf-8", "surrogatepass"))

    _op_BINSTRING = _op_SHORT_BINSTRING

    def _op_STRING(self, op: Op) -> None:
        self.stack.append(_text(op.arg))

    def _op_BINBYTES(self, op: Op) -> None:
        self.stack.append(self._full(op.arg))

    _op_SHORT_BINBYTES = _op_BINBYTES8 = _op_BINBYTES

    # containers
    def _op_EMPTY_TUPLE(self, op: Op) -> None:
        self.stack.append(())

    def _op_EMPTY_LIST(self, op: Op) -> None:
        self.stack.append([])

    def _op_EMPTY_DICT(self, op: Op) -> None:
        self.stack.append({})

    def _op_EMPTY_SET(self, op: Op) -> None:
        self.stack.append(set())

    def _op_TUPLE(self, op: Op) -> None:
        items = self.pop_mark()  # before touching self.stack: pop_mark replaces it
        self.stack.append(tuple(items))

    def _op_TUPLE1(self, op: Op) -> None:
        self.stack[-1] = (self.stack[-1],)

    def _op_TUPLE2(self, op: Op) -> None:
        self.stack[-2:] = [tuple(self.stack[-2:])]

    def _op_TUPLE3(self, op: Op) -> None:
        self.stack[-3:] = [tuple(self.stack[-3:])]

    def _op_LIST(self, op: Op) -> None:
        items = self.pop_mark()
        self.stack.append(items)

    def _op_DICT(self, op: Op) -> None:
        items = self.pop_mark()
        self.stack.append(dict(zip(items[::2], items[1::2], strict=True)))

    def _target(self, op: Op, kinds: tuple[type, ...], what: str) -> Any:
        """The object under the items an APPEND/SETITEM/ADDITEMS adds: one of `kinds`, or
        None when it is refused already or now (an object that is a list or dict subclass).
        Anything else cannot take items in any unpickler: a malformed pickle."""
        target = self.stack[-1]
        if isinstance(target, kinds):
            return target
        if isinstance(target, ObjectRecord):
            if target.refused is None:
                target.refused = (
                    f"{target.cls} is a {what} subclass; fix: store a plain {what} "
                    f"({what}(value)) and its attributes separately"
                )
            return None
        if isinstance(target, Refused):
            return None
        raise MalformedPickle(f"{op.name} at offset {op.offset} onto a {type(target).__name__}")

    def _op_APPEND(self, op: Op) -> None:
        item = self.stack.pop()
        target = self._target(op, (list,), "list")
        if target is not None:
            target.append(item)

    def _op_APPENDS(self, op: Op) -> None:
        items = self.pop_mark()
        target = self._target(op, (list,), "list")
        if target is not None:
            target.extend(items)

    def _op_SETITEM(self, op: Op) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        target = self._target(op, (dict,), "dict")
        if target is not None:
            target[key] = value

    def _op_SETITEMS(self, op: Op) -> None:
        items = self.pop_mark()
        target = self._target(op, (dict,), "dict")
        if target is not None:
            for key, value in zip(items[::2], items[1::2], strict=True):
                target[key] = value

    def _op_ADDITEMS(self, op: Op) -> None:
        items = self.pop_mark()
        target = self._target(op, (set, SetList), "set")
        if isinstance(target, set):
            target.update(items)
        elif target is not None:
            target.extend(items)

    def _op_FROZENSET(self, op: Op) -> None:
        items = self.pop_mark()
        # Converted stays hashable (a frozenset may be a key, refused then); SetList: sorted
        self.stack.append(Converted(SetList(items), rules.FROZENSET.note("frozenset")))

    # globals and calls
    def _op_GLOBAL(self, op: Op) -> None:
        module, name = op.arg
        self._push_global(self.allowlist.resolve(module, name))

    def _push_global(self, name: str) -> None:
        """Allow-listed constants (dtypes, layouts) are values; anything else is a name."""
        value = self.allowed.get(name)
        if value is not None and not callable(value):
            self.stack.append(value)
        else:
            self.stack.append(GlobalRef(name))

    def _op_STACK_GLOBAL(self, op: Op) -> None:
        name, module = self.stack.pop(), self.stack.pop()
        self._push_global(self.allowlist.resolve(str(module), str(name)))

    def _op_BINPERSID(self, op: Op) -> None:
        pid = self.stack.pop()
        self.stack.append(self._storage(pid, op))

    def _storage(self, pid: Any, op: Op) -> Any:
        import torch

        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            return self._refuse(f"persistent id at offset {op.offset} is not a storage")
        _tag, storage_type, key, location, numel = pid
        if self.storages is None:
            return self._refuse("storages outside a zip archive are not converted")
        # An allow-listed storage type arrives as torch's own StorageType value (it has a
        # dtype); UntypedStorage is a class, so it stays a name.
        dtype = getattr(storage_type, "dtype", None)
        if dtype is None and getattr(storage_type, "name", None) == "torch.storage.UntypedStorage":
            dtype = torch.uint8
        if not isinstance(dtype, torch.dtype) or type(numel) is not int or numel < 0:
            return self._refuse(f"unknown storage type {storage_type!r}")
        try:
            return self.storages.storage(str(key), dtype, numel, location)
        except StorageRefused as err:
            return self._refuse(str(err))

    def _refuse(self, reason: str) -> Refused:
        refused = Refused(reason)
        self.refused.append(refused)
        return refused

    def _op_REDUCE(self, op: Op) -> None:
        args = self.stack.pop()
        func = self.stack.pop()
        self.stack.append(self._call(func, args, op))

    def _call(self, func: Any, args: Any, op: Op) -> Any:
        if not isinstance(func, GlobalRef) or not isinstance(args, tuple):
            return self._refuse(f"REDUCE at offset {op.offset} of something that is not a global")
        name = func.name
        refused = next((arg for arg in args if isinstance(arg, Refused)), None)
        if refused is not None:  # a tensor of a refused storage, say: one reason, once
            return refused
        if name == "builtins.bytes" and not args:
            return self._refuse("b'' (pickled as a call of bytes(), which weights_only refuses)")
        if name in self.allowed and rules.rule_for_global(name) is None:
            return self._allowed_call(name, args)
        if is_dangerous(name):
            return self._refuse(objects.refuse_call(name))
        known = rules.convert_call(name, args)  # may be an empty (falsy) list or dict
        if known is None:
            return self._refuse(objects.refuse_call(name))
        if isinstance(known, Refused):
            self.refused.append(known)
        return known

    def _allowed_call(self, name: str, args: tuple) -> Any:
        outcome = call_allowed(name, self.allowed, args, self.budget)
        if isinstance(outcome, str):
            return self._refuse(outcome)
        value, spent = outcome
        self.budget -= spent
        return value

    def _op_NEWOBJ(self, op: Op) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if not isinstance(cls, GlobalRef) or not isinstance(args, tuple):
            self.stack.append(self._refuse(f"NEWOBJ at offset {op.offset} of {cls!r:.60}"))
        elif is_dangerous(cls.name):
            self.stack.append(self._refuse(objects.refuse_call(cls.name)))
        elif cls.name == "collections.OrderedDict" and not args:
            self.stack.append(collections.OrderedDict())
        elif args:
            self.stack.append(self._refuse(objects.refuse_arguments(cls.name)))
        else:
            made = objects.new_object(cls.name)
            if isinstance(made, Refused):
                self.refused.append(made)
            self.stack.append(made)

    def _op_BUILD(self, op: Op) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        slot_state = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slot_state = state
        parts_ok = all(part is None or type(part) is dict for part in (state, slot_state))
        if isinstance(inst, Refused):
            return
        if isinstance(inst, ObjectRecord):
            if parts_ok and all(type(key) is str for key in (state or {})):
                inst.state.update(objects.merged_state(state, slot_state))
            elif inst.refused is None:
                inst.refused = objects.refuse_state(inst.cls)
        elif type(inst) is collections.OrderedDict and parts_ok:
            for key, value in objects.merged_state(state, slot_state).items():
                if type(key) is not str:
                    raise MalformedPickle(f"BUILD at offset {op.offset} with a key {key!r:.40}")
                setattr(inst, key, value)  # state_dict's _metadata
        else:
            self.stack[-1] = self._refuse(
                f"BUILD at offset {op.offset} on a {type(inst).__name__} (a tensor with "
                f"Python attributes?): not converted"
            )

    def _op_NEWOBJ_EX(self, op: Op) -> None:
        kwargs = self.stack.pop()
        if not kwargs:
            self._op_NEWOBJ(op)
            return
        self.stack.pop()  # args
        cls = self.stack.pop()
        self.stack.append(self._refuse(objects.refuse_arguments(getattr(cls, "name", "?"))))


def convert_file(path: str | os.PathLike[str]) -> Conversion:
    """Statically convert `path`; raises ConversionRefused (by path) or Unreadable."""
    checkpoint = open_checkpoint(path)
    if checkpoint.format not in ("zip", "legacy", "raw-pickle"):
        raise Unreadable(f"{checkpoint.format} files cannot be converted")
    storages = ArchiveStorages(path) if checkpoint.format == "zip" else None
    try:
        budget = max(os.path.getsize(path), 1 << 20)
        machine = ConcreteMachine(checkpoint, storages, budget)
        try:
            raw = machine.execute()
        except (TruncatedPickle, MalformedPickle) as err:
            raise Unreadable(f"cannot convert: {err}") from None
        except TorchRefuses as err:
            raise Unreadable(f"cannot convert: {err}") from None
        except (IndexError, KeyError, TypeError, ValueError) as err:
            raise Unreadable(
                f"cannot convert: malformed pickle ({type(err).__name__}: {one_line(err)})"
            ) from None
        finisher = Finisher()
        result = finisher.run(raw)
        refusals = finisher.refusals
        if not refusals and machine.refused:  # refused objects the result dropped
            reasons = "; ".join(sorted({r.reason for r in machine.refused})[:3])
            refusals.append(
                f"<discarded>: {len(machine.refused)} refused object(s) built and thrown "
                f"away ({reasons})"
            )
        if refusals:
            raise ConversionRefused(refusals)
        return Conversion(result, finisher.conversions)
    finally:
        if storages is not None:
            storages.close()
