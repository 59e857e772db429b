"""Rebuild a checkpoint that weights_only refuses as primitives and tensors, statically.

The pickle is executed by our own small machine, not Python's: GLOBAL only names things,
and the only callables ever invoked are torch's weights_only allowlist (OrderedDict, set,
torch.Size, ...) and our own converters. What the file would have built becomes:

    Enum member            -> its value             (a class called with one primitive)
    dataclass / object     -> dict of its state      (NEWOBJ + BUILD)
    datetime / date        -> ISO string;  timedelta -> seconds
    deque, set, frozenset  -> list;  defaultdict -> dict
    pathlib path           -> str
    nn.Module              -> {"class", "config", "state_dict"}
    tensors                -> tensors (storage bytes read from the archive)

Each conversion is reported with its path. Anything else (a call of os.system, an unknown
callable with non-primitive arguments, an extension code) is refused, by path, and then the
whole file is refused: a partial conversion is not written.
"""

from __future__ import annotations

import collections
import datetime
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

from pytest_ckpt.audit.advice import is_dangerous
from pytest_ckpt.audit.allowlist import load_allowlist
from pytest_ckpt.audit.archive import Unreadable, open_checkpoint
from pytest_ckpt.audit.opcodes import Blob, MalformedPickle, Op, TruncatedPickle, decode_at

_TENSOR_REBUILD = "torch._utils._rebuild_tensor_v2"
_PARAMETER_REBUILD = "torch._utils._rebuild_parameter"
_PARAMETER = "torch.nn.parameter.Parameter"
_MODULE_STATE = frozenset({"_parameters", "_buffers", "_modules"})


class ConversionRefused(Exception):
    """Some objects cannot be converted faithfully; `refusals` lists them by path."""

    def __init__(self, refusals: list[str]) -> None:
        super().__init__("; ".join(refusals))
        self.refusals = refusals


@dataclass(slots=True)
class Conversion:
    result: Any
    conversions: list[str] = field(default_factory=list)


# ---- values the machine builds before the final conversion pass -----------------------------


@dataclass(slots=True, eq=False)
class GlobalRef:
    name: str


@dataclass(slots=True, eq=False)
class Refused:
    reason: str


@dataclass(slots=True, eq=False)
class EnumValue:
    cls: str
    value: Any


@dataclass(slots=True, eq=False)
class Converted:
    """A value already converted, with the sentence that reports it."""

    value: Any
    what: str


@dataclass(slots=True, eq=False)
class ObjectRecord:
    cls: str
    state: dict[str, Any] = field(default_factory=dict)


class DequeList(list):
    """A deque being filled by APPENDS; becomes a plain list."""


class SetList(list):
    """A set/frozenset being filled; becomes a plain list."""


class DefaultDict(dict):
    """A defaultdict being filled by SETITEMS; becomes a plain dict."""


def _text(value: Any) -> Any:
    if isinstance(value, Blob):
        if not value.complete:
            raise MalformedPickle("string too long to convert faithfully")
        return value.preview
    return value


class _Machine:
    def __init__(self, checkpoint, archive: zipfile.ZipFile | None, prefix: str) -> None:
        import torch._weights_only_unpickler as wo

        self.allowed = {**wo._get_allowed_globals(), **wo._get_user_allowed_globals()}
        self.allowlist = load_allowlist()
        self.checkpoint = checkpoint
        self.archive = archive
        self.prefix = prefix
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.storages: dict[str, Any] = {}
        self.refused: list[Refused] = []

    def run(self) -> Any:
        data, pos = self.checkpoint.pickle, self.checkpoint.pickle_start
        while True:
            op, pos = decode_at(data, pos)
            if op.name == "STOP":
                return self.stack.pop()
            handler = getattr(self, f"op_{op.name}", None)
            if handler is None:
                raise MalformedPickle(f"opcode {op.name} at offset {op.offset} is not supported")
            handler(op)

    # stack and memo
    def pop_mark(self) -> list[Any]:
        items, self.stack = self.stack, self.metastack.pop()
        return items

    def op_PROTO(self, op: Op) -> None: ...
    def op_FRAME(self, op: Op) -> None: ...

    def op_MARK(self, op: Op) -> None:
        self.metastack.append(self.stack)
        self.stack = []

    def op_POP(self, op: Op) -> None:
        self.stack.pop()

    def op_POP_MARK(self, op: Op) -> None:
        self.pop_mark()

    def op_DUP(self, op: Op) -> None:
        self.stack.append(self.stack[-1])

    def _put(self, index: int) -> None:
        self.memo[index] = self.stack[-1]

    def op_BINPUT(self, op: Op) -> None:
        self._put(op.arg)

    op_LONG_BINPUT = op_BINPUT

    def op_PUT(self, op: Op) -> None:
        self._put(int(op.arg))

    def op_MEMOIZE(self, op: Op) -> None:
        self._put(len(self.memo))

    def op_BINGET(self, op: Op) -> None:
        self.stack.append(self.memo[int(op.arg)])

    op_LONG_BINGET = op_GET = op_BINGET

    # primitives
    def op_NONE(self, op: Op) -> None:
        self.stack.append(None)

    def op_NEWTRUE(self, op: Op) -> None:
        self.stack.append(True)

    def op_NEWFALSE(self, op: Op) -> None:
        self.stack.append(False)

    def op_BININT(self, op: Op) -> None:
        self.stack.append(op.arg)

    op_BININT1 = op_BININT2 = op_LONG1 = op_LONG4 = op_INT = op_LONG = op_BINFLOAT = op_BININT
    op_FLOAT = op_BININT

    def _full(self, blob: Blob) -> bytes:
        return bytes(self.checkpoint.pickle[blob.start : blob.start + blob.length])

    def op_BINUNICODE(self, op: Op) -> None:
        if isinstance(op.arg, Blob) and op.arg.kind == "str":
            self.stack.append(self._full(op.arg).decode("utf-8", "surrogatepass"))
        else:  # text-form opcodes (protocol 0) keep their value in the preview
            self.stack.append(_text(op.arg))

    op_SHORT_BINUNICODE = op_BINUNICODE8 = op_UNICODE = op_BINUNICODE

    def op_SHORT_BINSTRING(self, op: Op) -> None:
        raw = self._full(op.arg) if isinstance(op.arg, Blob) and op.arg.kind == "bytes" else b""
        self.stack.append(raw.decode("utf-8", "surrogatepass"))

    op_BINSTRING = op_SHORT_BINSTRING

    def op_STRING(self, op: Op) -> None:
        self.stack.append(_text(op.arg))

    def op_BINBYTES(self, op: Op) -> None:
        self.stack.append(self._full(op.arg))

    op_SHORT_BINBYTES = op_BINBYTES8 = op_BINBYTES

    # containers
    def op_EMPTY_TUPLE(self, op: Op) -> None:
        self.stack.append(())

    def op_EMPTY_LIST(self, op: Op) -> None:
        self.stack.append([])

    def op_EMPTY_DICT(self, op: Op) -> None:
        self.stack.append({})

    def op_EMPTY_SET(self, op: Op) -> None:
        self.stack.append(set())

    def op_TUPLE(self, op: Op) -> None:
        items = self.pop_mark()  # before touching self.stack: pop_mark replaces it
        self.stack.append(tuple(items))

    def op_TUPLE1(self, op: Op) -> None:
        self.stack[-1] = (self.stack[-1],)

    def op_TUPLE2(self, op: Op) -> None:
        self.stack[-2:] = [tuple(self.stack[-2:])]

    def op_TUPLE3(self, op: Op) -> None:
        self.stack[-3:] = [tuple(self.stack[-3:])]

    def op_LIST(self, op: Op) -> None:
        items = self.pop_mark()
        self.stack.append(items)

    def op_DICT(self, op: Op) -> None:
        items = self.pop_mark()
        self.stack.append(dict(zip(items[::2], items[1::2], strict=True)))

    def op_APPEND(self, op: Op) -> None:
        item = self.stack.pop()
        self.stack[-1].append(item)

    def op_APPENDS(self, op: Op) -> None:
        items = self.pop_mark()
        self.stack[-1].extend(items)

    def op_SETITEM(self, op: Op) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self.stack[-1][key] = value

    def op_SETITEMS(self, op: Op) -> None:
        items = self.pop_mark()
        for key, value in zip(items[::2], items[1::2], strict=True):
            self.stack[-1][key] = value

    def op_ADDITEMS(self, op: Op) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if isinstance(target, set):
            target.update(items)
        else:
            target.extend(items)

    def op_FROZENSET(self, op: Op) -> None:
        items = self.pop_mark()
        self.stack.append(Converted(items, "frozenset -> list"))

    # globals and calls
    def op_GLOBAL(self, op: Op) -> None:
        module, name = op.arg
        self._push_global(self.allowlist.resolve(module, name))

    def _push_global(self, name: str) -> None:
        """Allow-listed constants (dtypes, layouts) are values; anything else is a name."""
        value = self.allowed.get(name)
        if value is not None and not callable(value):
            self.stack.append(value)
        else:
            self.stack.append(GlobalRef(name))

    def op_STACK_GLOBAL(self, op: Op) -> None:
        name, module = self.stack.pop(), self.stack.pop()
        self._push_global(self.allowlist.resolve(str(module), str(name)))

    def op_BINPERSID(self, op: Op) -> None:
        pid = self.stack.pop()
        self.stack.append(self._storage(pid, op))

    def _storage(self, pid: Any, op: Op) -> Any:
        import torch

        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            return self._refuse(f"persistent id at offset {op.offset} is not a storage")
        _tag, storage_type, key, _location, numel = pid
        if self.archive is None:
            return self._refuse("storages outside a zip archive are not converted")
        if key in self.storages:
            return self.storages[key]
        # An allow-listed storage type arrives as torch's own StorageType value (it has a
        # dtype); UntypedStorage is a class, so it stays a name.
        dtype = getattr(storage_type, "dtype", None)
        if dtype is None and getattr(storage_type, "name", None) == "torch.storage.UntypedStorage":
            dtype = torch.uint8
        if not isinstance(dtype, torch.dtype):
            return self._refuse(f"unknown storage type {storage_type!r}")
        size = torch._utils._element_size(dtype)
        try:
            raw = self.archive.read(f"{self.prefix}/data/{key}")
        except KeyError:
            return self._refuse(f"storage {key!r} missing from the archive")
        if len(raw) < numel * size:
            return self._refuse(f"storage {key!r} is shorter than it declares")
        flat = torch.frombuffer(bytearray(raw[: numel * size]), dtype=torch.uint8)
        storage = flat.view(dtype) if numel else torch.empty(0, dtype=dtype)
        self.storages[key] = storage
        return storage

    def _refuse(self, reason: str) -> Refused:
        refused = Refused(reason)
        self.refused.append(refused)
        return refused

    def op_REDUCE(self, op: Op) -> None:
        args = self.stack.pop()
        func = self.stack.pop()
        self.stack.append(self._call(func, args, op))

    def _call(self, func: Any, args: Any, op: Op) -> Any:
        import torch

        if not isinstance(func, GlobalRef) or not isinstance(args, tuple):
            return self._refuse(f"REDUCE at offset {op.offset} of something that is not a global")
        name = func.name
        if name == _TENSOR_REBUILD:
            storage, offset, size, stride = args[:4]
            if isinstance(storage, Refused):
                return storage
            return torch.as_strided(storage, tuple(size), tuple(stride), offset)
        if name == _PARAMETER_REBUILD:
            if isinstance(args[0], Refused):
                return args[0]
            return torch.nn.Parameter(args[0], requires_grad=bool(args[1]))
        if name == "torch._tensor._rebuild_from_type_v2":
            inner, new_type, inner_args, state = args
            if state or getattr(new_type, "name", None) not in ("torch.Tensor", _PARAMETER):
                return self._refuse("a tensor subclass or a tensor with Python attributes")
            return self._call(inner, inner_args, op)
        if name == "builtins.bytes" and not args:
            return self._refuse("b'' (pickled as a call of bytes(), which weights_only refuses)")
        if name in self.allowed and not name.startswith("torch._utils._rebuild"):
            return self.allowed[name](*args)  # torch's own allowlist: safe by its contract
        if is_dangerous(name):
            return self._refuse(f"{name} is called when unpickling: refusing to convert")
        known = _convert_call(name, args)  # may be an empty (falsy) list or dict
        if known is None:
            return self._refuse(f"call of {name} with arguments that are not primitives")
        return known

    def op_NEWOBJ(self, op: Op) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if not isinstance(cls, GlobalRef) or is_dangerous(cls.name):
            self.stack.append(self._refuse(f"NEWOBJ at offset {op.offset} of {cls}"))
            return
        known = _convert_call(cls.name, args)
        if known is not None:
            self.stack.append(known)
        elif cls.name == "collections.OrderedDict":
            self.stack.append(collections.OrderedDict())
        else:
            self.stack.append(ObjectRecord(cls.name))

    def op_BUILD(self, op: Op) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        slot_state = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slot_state = state
        merged = {**(state or {}), **(slot_state or {})}
        if isinstance(inst, ObjectRecord):
            inst.state.update(merged)
        elif isinstance(inst, collections.OrderedDict):
            for key, value in merged.items():
                setattr(inst, key, value)  # state_dict's _metadata
        else:
            self.stack[-1] = self._refuse(f"BUILD at offset {op.offset} on {type(inst).__name__}")

    def op_NEWOBJ_EX(self, op: Op) -> None:
        self.stack.pop()  # kwargs
        self.op_NEWOBJ(op)


def _convert_call(name: str, args: tuple) -> Any:
    """What a known constructor call becomes, or None when we do not know it."""
    if name in ("datetime.datetime", "datetime.date", "datetime.time") and args:
        state = args[0]
        if isinstance(state, str):
            state = state.encode("latin-1")
        if isinstance(state, bytes):
            value = _decode_datetime(name, state, args[1] if len(args) > 1 else None)
            return Converted(value.isoformat(), f"{name} -> ISO string")
    if name == "datetime.timedelta" and all(isinstance(a, int) for a in args):
        delta = datetime.timedelta(*args)
        return Converted(delta, "datetime.timedelta -> seconds")
    if name == "datetime.timezone" and args and isinstance(args[0], Converted):
        return datetime.timezone(args[0].value)
    if name == "collections.deque" and args:
        deque = DequeList(args[0] if isinstance(args[0], list) else [])
        return deque
    if name == "collections.defaultdict":
        return DefaultDict()
    if name in ("builtins.frozenset", "builtins.set") and len(args) <= 1:
        return SetList(args[0] if args else [])
    if name.startswith("pathlib.") and all(isinstance(a, str) for a in args):
        return Converted("/".join(args).replace("//", "/"), f"{name} -> str")
    if name == "copyreg._reconstructor" and args and isinstance(args[0], GlobalRef):
        return ObjectRecord(args[0].name)
    if len(args) == 1 and isinstance(args[0], (int, float, str, bool, type(None))):
        return EnumValue(name, args[0])
    return None


def _decode_datetime(name: str, state: bytes, tz: Any) -> Any:
    tzinfo = tz if isinstance(tz, datetime.tzinfo) else None
    if name == "datetime.date":
        return datetime.date(state[0] * 256 + state[1], state[2], state[3])
    if name == "datetime.time":
        return datetime.time(
            state[0], state[1], state[2], (state[3] << 16) | (state[4] << 8) | state[5], tzinfo
        )
    return datetime.datetime(
        state[0] * 256 + state[1],
        state[2],
        state[3],
        state[4],
        state[5],
        state[6],
        (state[7] << 16) | (state[8] << 8) | state[9],
        tzinfo,
    )


# ---- final pass: markers -> primitives, with paths ----------------------------------------------


def finish(value: Any, path: str, conversions: list[str], refusals: list[str]) -> Any:
    """Replace every marker under `value` by its primitive form, reporting each by path."""
    if isinstance(value, Refused):
        refusals.append(f"{path}: {value.reason}")
        return None
    if isinstance(value, EnumValue):
        conversions.append(f"{path}: {value.cls} member -> its value {value.value!r}")
        return value.value
    if isinstance(value, Converted):
        conversions.append(f"{path}: {value.what}")
        inner = value.value
        if isinstance(inner, datetime.timedelta):
            return inner.total_seconds()
        return finish(inner, path, conversions, refusals) if isinstance(inner, list) else inner
    if isinstance(value, GlobalRef):
        refusals.append(f"{path}: a bare reference to {value.name}")
        return None
    if isinstance(value, ObjectRecord):
        if value.state.keys() >= _MODULE_STATE:  # an nn.Module, whatever its class name
            conversions.append(f"{path}: {value.cls} module -> state_dict + config")
            return _module_record(value, path, conversions, refusals)
        conversions.append(f"{path}: {value.cls} object -> dict of its state")
        return {k: finish(v, f"{path}.{k}", conversions, refusals) for k, v in value.state.items()}
    if isinstance(value, (DequeList, SetList)):
        what = "deque" if isinstance(value, DequeList) else "set"
        conversions.append(f"{path}: {what} -> list")
        return [finish(v, f"{path}[{i}]", conversions, refusals) for i, v in enumerate(value)]
    if isinstance(value, DefaultDict):
        conversions.append(f"{path}: defaultdict -> dict")
        return {k: finish(v, f"{path}[{k!r}]", conversions, refusals) for k, v in value.items()}
    if isinstance(value, set):
        conversions.append(f"{path}: set -> list")
        return [finish(v, f"{path}[{i}]", conversions, refusals) for i, v in enumerate(value)]
    if isinstance(value, collections.OrderedDict):
        result = collections.OrderedDict(
            (k, finish(v, f"{path}[{k!r}]", conversions, refusals)) for k, v in value.items()
        )
        if hasattr(value, "_metadata"):
            result._metadata = value._metadata  # type: ignore[attr-defined]
        return result
    if isinstance(value, dict):
        return {k: finish(v, f"{path}[{k!r}]", conversions, refusals) for k, v in value.items()}
    if isinstance(value, list):
        return [finish(v, f"{path}[{i}]", conversions, refusals) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(finish(v, f"{path}[{i}]", conversions, refusals) for i, v in enumerate(value))
    return value  # primitives and tensors


def _module_record(record: ObjectRecord, path: str, conversions, refusals) -> dict[str, Any]:
    """An nn.Module's pickled state -> its tensors by dotted name, and its primitive config."""
    tensors: dict[str, Any] = {}

    def collect(module: ObjectRecord, prefix: str) -> None:
        for group in ("_parameters", "_buffers"):
            for name, tensor in (module.state.get(group) or {}).items():
                if tensor is not None:
                    tensors[prefix + name] = finish(tensor, f"{path}.{prefix}{name}", [], refusals)
        for name, child in (module.state.get("_modules") or {}).items():
            if isinstance(child, ObjectRecord):
                collect(child, f"{prefix}{name}.")

    collect(record, "")
    config = {
        key: value
        for key, value in record.state.items()
        if not key.startswith("_") and isinstance(value, (int, float, str, bool, type(None)))
    }
    return {"class": record.cls, "config": config, "state_dict": tensors}


def convert_file(path: str | os.PathLike[str]) -> Conversion:
    """Statically convert `path`; raises ConversionRefused (by path) or Unreadable."""
    checkpoint = open_checkpoint(path)
    if checkpoint.format not in ("zip", "legacy", "raw-pickle"):
        raise Unreadable(f"{checkpoint.format} files cannot be converted")
    archive = zipfile.ZipFile(path) if checkpoint.format == "zip" else None
    try:
        prefix = archive.infolist()[0].filename.split("/", 1)[0] if archive else ""
        machine = _Machine(checkpoint, archive, prefix)
        try:
            raw = machine.run()
        except (TruncatedPickle, MalformedPickle) as err:
            raise Unreadable(f"cannot convert: {err}") from None
        except (IndexError, KeyError, TypeError, ValueError) as err:
            raise Unreadable(
                f"cannot convert: malformed pickle ({type(err).__name__}: {err})"
            ) from None
        conversions: list[str] = []
        refusals: list[str] = []
        result = finish(raw, "root", conversions, refusals)
        unseen = len(machine.refused) - len(refusals)  # refused objects the result dropped
        if unseen > 0:
            refusals.append(f"<discarded>: {unseen} refused object(s) built and thrown away")
        if refusals:
            raise ConversionRefused(refusals)
        return Conversion(result, conversions)
    finally:
        if archive is not None:
            archive.close()
