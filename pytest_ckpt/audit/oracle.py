"""torch as the oracle: its own weights_only unpickler, run over a pickle the static pass has
vetted, with storages that hold no bytes.

The static machine (`verdict`) mirrors torch's checks by name; torch checks far more while it
builds objects (arguments and arity of allow-listed callables, BUILD state types, SETITEMS
parity, hashable keys, tensor size/stride/offset against the storage, the storage location).
Re-implementing each would be a second, drifting copy of torch, so after a clean static pass
`torch._weights_only_unpickler.Unpickler` itself runs over the bytes, and whatever it raises
is torch's refusal.

Why running it in-process is safe (the contract `audit_file` relies on):
- it runs only when the static pass proved that every GLOBAL in the pickle names torch's own
  default allowlist (not the user's `--allow` names nor `add_safe_globals` of the host
  process), so torch's unpickler can only push and call what torch itself vouches for under
  `weights_only=True`; it never imports anything;
- storages are `device="meta"`: they have a size and no bytes, so nothing reads or allocates
  tensor data (nothing from the file is read past the pickle);
- the static pass refuses to hand over a pickle whose allow-listed calls could allocate
  memory the file chooses (`bytearray(n)`, legacy tensor constructors, storages with an int
  size) or whose calls would do work far beyond the pickle's size (`stage2_gate.OracleGate`).

Meta storages skip checks real ones make (`set_` against the storage size) and have no
kernels for quantized and nested tensors: `shadow_dispatch` makes them answer as real ones
would, so the pass runs to the end, and says which objects it could not judge.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from pytest_ckpt.audit.formats.legacy import LEGACY_MAGIC, LEGACY_PROTOCOL
from pytest_ckpt.audit.shadow_dispatch import ResourceLimit, Unverifiable, shadow_mode

_MESSAGE_CHARS = 240
# torch's errors for reading a meta storage or tensor: our storages, not the file, at fault
_NO_KERNEL = re.compile(r"'(Quantized)?Meta' backend|no fake impl or Meta kernel")
_NO_DATA = re.compile(r"'meta' device type|meta tensor|out of meta|device \"meta\"", re.I)


class TorchRefusal(Exception):
    """torch's unpickler (or a check torch.load makes around it) refuses the file."""


class FileTruncated(Exception):
    """The file ends inside the storage data torch.load would read (legacy format)."""


class NeedsTensorData(Exception):
    """torch's unpickler would read tensor bytes here (an allow-listed call iterating a
    storage, say), which a meta storage does not have: torch's verdict is not known."""


def _message(err: BaseException) -> str:
    """`str(err)`, or a stand-in when the message's arguments cannot be shown: an error
    raised with a tensor argument shows its repr, which raises for our meta stand-ins."""
    try:
        return str(err)
    except Exception:  # any failure of an argument's repr: the error itself still stands
        return f"{type(err).__name__} with an argument that cannot be shown"


def _one_line(err: BaseException) -> str:
    text = " ".join(_message(err).split()) or "(no message)"
    if len(text) > _MESSAGE_CHARS:
        text = text[:_MESSAGE_CHARS] + "..."
    return f"{type(err).__name__}: {text}"


def _restore_location(location: Any, map_location: str | None) -> bool:
    """Raise where torch.load's default_restore_location would, for a storage at `location`;
    whether torch restores it on the meta device."""
    import torch
    from torch.serialization import _maybe_decode_ascii, default_restore_location

    location = _maybe_decode_ascii(location)
    target = map_location if map_location is not None else location
    meta = torch.UntypedStorage(0, device="meta")
    # NotImplementedError: the device exists and was validated; only copying a meta storage
    # there fails
    with contextlib.suppress(NotImplementedError):
        default_restore_location(meta, target)
    return target == "meta"


def _storage_dtype(storage_type: Any) -> Any:
    import torch

    return torch.uint8 if storage_type is torch.UntypedStorage else storage_type.dtype


def _formatted_key(key: Any) -> str:
    """The text torch.load puts after `data/` for a storage key, `f"{key}"`; Unverifiable
    for a key of another type (a tuple, a tensor: its text could show our meta stand-ins)."""
    import torch

    if type(key) not in (str, bytes, int, float, complex, bool, type(None), torch.dtype):
        raise Unverifiable(f"a storage key of type {type(key).__name__}")
    return f"{key}"


def _reuses_records_by_dtype() -> bool:
    """torch >= 2.15's persistent_load caches every storage record it loads, and re-wraps (same
    byte length) or reloads (another) a record referenced again under another dtype; before,
    it cached only storages with data and handed them out whatever dtype was asked."""
    import torch

    from pytest_ckpt.torch_support import parse_torch_version

    return parse_torch_version(torch.__version__) >= (2, 15)


def _zip_persistent_load(
    record_sizes: Mapping[str, int], map_location: str | None, really_meta: set[int]
) -> Callable[[Any], Any]:
    """torch.serialization._load's persistent_load, with meta storages."""
    import torch
    from torch.serialization import _maybe_decode_ascii

    loaded: dict[str, Any] = {}
    by_dtype = _reuses_records_by_dtype()

    def load_tensor(dtype: Any, nbytes: int, key: Any, location: Any) -> Any:
        name = f"data/{_formatted_key(key)}"  # torch: any key, as f"data/{key}" shows it
        size = record_sizes.get(name[5:])
        if size is None:
            raise RuntimeError(f"PytorchStreamReader failed locating file {name}")
        if size != nbytes:
            raise RuntimeError(
                f"record size ({size} bytes) does not match expected size ({nbytes} bytes)"
            )
        storage = torch.UntypedStorage(nbytes, device="meta")
        meta = _restore_location(location, map_location)
        if meta:
            really_meta.add(storage._cdata)
        typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=dtype, _internal=True)
        if by_dtype or (nbytes and not meta):  # before 2.15: storages with a data pointer
            loaded.setdefault(key, typed)
        return typed

    def persistent_load(saved_id: Any) -> Any:
        if not isinstance(saved_id, tuple):
            raise AssertionError(f"saved_id must be a tuple, got {type(saved_id).__name__}")
        if _maybe_decode_ascii(saved_id[0]) != "storage":
            raise AssertionError("Unknown typename for persistent_load")
        storage_type, key, location, numel = saved_id[1:]
        dtype = _storage_dtype(storage_type)
        nbytes = numel * torch._utils._element_size(dtype)
        cached = loaded.get(key)
        if cached is None:
            return load_tensor(dtype, nbytes, key, location)
        if not by_dtype or cached.dtype == dtype:
            return cached
        if cached._untyped_storage.nbytes() == nbytes:
            return torch.storage.TypedStorage(
                wrap_storage=cached._untyped_storage, dtype=dtype, _internal=True
            )
        return load_tensor(dtype, nbytes, key, location)

    return persistent_load


def _run(data: bytes, start: int, persistent_load: Callable[[Any], Any] | None, mode: Any) -> tuple:
    """torch's Unpickler over `data[start:]`, under `mode` (`shadow_dispatch`): (the object,
    the offset after its STOP)."""
    from torch._weights_only_unpickler import Unpickler as WeightsOnlyUnpickler

    stream = io.BytesIO(data)
    stream.seek(start)
    unpickler = WeightsOnlyUnpickler(stream, encoding="utf-8")  # torch.load's default encoding
    if persistent_load is not None:
        # torch.load hooks it the same way: the instance attribute shadows the class's
        # method (which refuses every persistent id), and the unpickler calls the attribute.
        unpickler.persistent_load = persistent_load  # type: ignore[method-assign]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mode:
            result = unpickler.load()
        _validate_sparse_tensors()
    return result, stream.tell()


def _sparse_tensors_to_validate() -> list[Any]:
    """torch's list of sparse tensors awaiting validation after a load: a module global up
    to torch 2.14, thread-local from 2.15."""
    import torch

    getter = getattr(torch._utils, "_get_sparse_tensors_to_validate", None)
    return getter() if getter is not None else torch._utils._sparse_tensors_to_validate


def _validate_sparse_tensors() -> None:
    """torch.load's check after the unpickler: from torch 2.14 it is told weights_only, and
    then always validates (before, only under check_sparse_tensor_invariants)."""
    import inspect

    import torch

    validate = torch._utils._validate_loaded_sparse_tensors
    if "weights_only" in inspect.signature(validate).parameters:
        validate(weights_only=True)  # type: ignore[call-arg]  # torch>=2.14
    else:
        validate()


def _refusing(job: Callable[[], Any]) -> Any:
    """Run `job`; anything torch's code raises is torch refusing the file (the unpickler
    raises UnpicklingError, TypeError, ValueError, KeyError, IndexError, RuntimeError... by
    design), so every Exception becomes a TorchRefusal, in one line. What our meta storages
    cannot do is not torch's refusal: an operator with no meta kernel that `shadow_dispatch`
    does not know is `Unverifiable` (the pass stopped there), reading bytes NeedsTensorData."""

    try:
        return job()
    except (TorchRefusal, FileTruncated, Unverifiable, ResourceLimit):
        raise
    except Exception as err:  # see the docstring: every exception is torch's refusal
        if isinstance(err, (NotImplementedError, RuntimeError)):  # our storages' fault?
            if _NO_KERNEL.search(_message(err)):
                raise Unverifiable(f"stage 2 stopped at {_one_line(err)}") from None
            if _NO_DATA.search(_message(err)):
                raise NeedsTensorData(_one_line(err)) from None
        raise TorchRefusal(_one_line(err)) from None
    finally:
        _sparse_tensors_to_validate().clear()


def zip_refusal(
    data: bytes, record_sizes: Mapping[str, int], map_location: str | None
) -> list[str]:
    """Raise TorchRefusal where torch.load(weights_only=True) refuses this data.pkl,
    NeedsTensorData where its verdict depends on tensor bytes, Unverifiable where the pass
    could not go on, ResourceLimit where torch would allocate what the file chooses.
    Returns what the pass stood in for and could not judge (then the verdict is not ok)."""
    meta: set[int] = set()
    mode = shadow_mode(meta)
    load = _zip_persistent_load(record_sizes, map_location, meta)
    _refusing(lambda: _run(data, 0, load, mode))
    return mode.unverified


def legacy_refusal(
    data: bytes,
    read_at: Callable[[int, int], bytes],
    file_size: int,
    map_location: str | None,
) -> list[str]:
    """Raise as `zip_refusal` does where torch.load(weights_only=True) refuses this legacy
    file: its five pickles (`data` holds them, from offset 0) through torch's unpickler, then
    the size record of each storage, read with `read_at(offset, n)` (tensor bytes are never
    read). Returns what the pass could not judge."""
    meta: set[int] = set()
    mode = shadow_mode(meta)

    def job() -> None:
        import torch

        magic, pos = _run(data, 0, None, mode)
        if magic != LEGACY_MAGIC:
            raise TorchRefusal("RuntimeError: Invalid magic number; corrupt file?")
        protocol, pos = _run(data, pos, None, mode)
        if protocol != LEGACY_PROTOCOL:
            raise TorchRefusal(f"RuntimeError: Invalid protocol version: {protocol!r}")
        _sys_info, pos = _run(data, pos, None, mode)
        roots: dict[Any, Any] = {}
        load = _legacy_persistent_load(roots, map_location, meta)
        _result, pos = _run(data, pos, load, mode)
        keys, pos = _run(data, pos, None, mode)
        for key in keys:
            if key not in roots:
                raise AssertionError(f"storage key {key!r} not found in deserialized_objects")
            typed = roots[key]
            element = torch._utils._element_size(typed.dtype)
            header = read_at(pos, 8)
            if len(header) < 8:
                raise FileTruncated(f"the file ends in the size record of storage {key!r}")
            (count,) = struct.unpack("<q", header)
            if count * element != typed._untyped_storage.nbytes():
                raise RuntimeError(
                    f"storage has wrong byte size: expected {typed._untyped_storage.nbytes()} "
                    f"got {count * element}"
                )
            pos += 8 + count * element
            if pos > file_size:
                raise FileTruncated(f"the file ends inside the bytes of storage {key!r}")

    _refusing(job)
    return mode.unverified


def _legacy_persistent_load(
    roots: dict[Any, Any], map_location: str | None, really_meta: set[int]
) -> Callable:
    """torch.serialization._legacy_load's persistent_load, with meta storages."""
    import torch
    from torch.serialization import _maybe_decode_ascii

    by_dtype = _reuses_records_by_dtype()

    def persistent_load(saved_id: Any) -> Any:
        if not isinstance(saved_id, tuple):
            raise AssertionError(f"saved_id must be a tuple, got {type(saved_id).__name__}")
        typename = _maybe_decode_ascii(saved_id[0])
        data = saved_id[1:]
        if typename == "module":
            return data[0]  # torch compares container source here, then returns the type
        if typename != "storage":
            raise RuntimeError(f"Unknown saved id type: {saved_id[0]}")
        storage_type, root_key, location, numel, view_metadata = data
        location = _maybe_decode_ascii(location)
        dtype = storage_type.dtype
        element = torch._utils._element_size(dtype)
        nbytes = numel * element
        if root_key not in roots:
            storage = torch.UntypedStorage(nbytes, device="meta")
            if _restore_location(location, map_location):
                really_meta.add(storage._cdata)
            roots[root_key] = torch.storage.TypedStorage(
                wrap_storage=storage, dtype=dtype, _internal=True
            )
        typed = roots[root_key]
        root_meta = typed._untyped_storage._cdata in really_meta
        if by_dtype:  # torch >= 2.15: another dtype re-wraps the root, or gets a new one
            same_size = typed._untyped_storage.nbytes() == nbytes
            fresh = typed.dtype != dtype and not same_size
            if typed.dtype != dtype and same_size:
                typed = torch.storage.TypedStorage(
                    wrap_storage=typed._untyped_storage, dtype=dtype, _internal=True
                )
        else:  # torch: a data pointer of 0
            fresh = typed._untyped_storage.nbytes() == 0 or root_meta
        if fresh:  # torch's new empty storage is resizable: set_ grows it and checks nothing
            typed = torch.storage.TypedStorage(device="meta", dtype=dtype, _internal=True)
            really_meta.add(typed._untyped_storage._cdata)
        if view_metadata is None:
            return typed
        view_key, offset, view_size = view_metadata
        if view_key not in roots:
            untyped = typed._untyped_storage[offset * element : (offset + view_size) * element]
            roots[view_key] = torch.storage.TypedStorage(
                wrap_storage=untyped, dtype=dtype, _internal=True
            )
        return roots[view_key]

    return persistent_load
