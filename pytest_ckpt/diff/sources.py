"""One side of a diff: a checkpoint opened for reading, audited first, its tensors read lazily.

Every path is audited before anything reads it as a checkpoint: a torch file by
`audit_file`, a safetensors file by `audit_safetensors`, a DCP folder by `audit_dcp_folder`.
A file with findings is refused naming its globals, so nothing it holds ever runs. Reading:

- torch zip files: `torch.load(weights_only=True, mmap=True)`: tensors stay in the file until
  compared (legacy files cannot be mapped; torch reads them whole, weights_only still);
- safetensors (one file, or the shards named by a `*.safetensors.index.json`): the audited
  header gives each tensor's place, read as a view of the memory-mapped file;
- DCP folders: the project's `SafeFileSystemReader` (`load_safely`), one tensor at a time.

Keys are flat: nested dicts and lists are joined with "." as DCP flattens them, so a `.pt`
state dict and the safetensors or DCP folder of the same tensors have the same keys.
"""

from __future__ import annotations

import json
import mmap
import os
import pickle
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_ckpt.audit import Report, audit_file
from pytest_ckpt.audit.allowlist import load_allowlist
from pytest_ckpt.audit.formats.safetensors import audit_safetensors, looks_like_safetensors
from pytest_ckpt.audit.formats.torch_archive import regular_file_size
from pytest_ckpt.errors import CheckpointError, Unreadable

INDEX_SUFFIX = ".safetensors.index.json"
_SAFETENSORS_DTYPES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
    "F16": "float16", "BF16": "bfloat16", "I32": "int32", "U32": "uint32", "F32": "float32",
    "F64": "float64", "I64": "int64", "U64": "uint64", "C64": "complex64",
    "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn", "F8_E8M0": "float8_e8m0fnu",
}  # fmt: skip


class DiffRefused(CheckpointError):
    """A side cannot be diffed: unreadable, or refused by its audit. One line for people."""


@dataclass(slots=True, frozen=True)
class Entry:
    """One flat key: a tensor (dtype and shape known without reading it) or another value."""

    dtype: str | None  # "float32"...; None for a value that is not a tensor
    shape: tuple[int, ...] | None
    read: Callable[[], Any]


@dataclass(slots=True)
class Side:
    path: str
    format: str
    entries: dict[str, Entry]


def open_side(path: str, allow: Iterable[str]) -> Side:
    """Audit `path`, then index its keys (files are mapped, not read). Raises
    DiffRefused (unreadable, refused, or a layout this reader does not know)."""
    from pytest_ckpt.audit.formats.dcp.folder import is_dcp_folder

    allow = tuple(allow)
    target = Path(path)
    if target.is_dir():
        if is_dcp_folder(target):
            return _dcp_side(path, allow)
        indexes = sorted(target.glob(f"*{INDEX_SUFFIX}"))
        if len(indexes) == 1:
            return _sharded_side(path, indexes[0])
        raise DiffRefused(
            f"{path}: a folder, but not a DCP folder (no .metadata) and not one with exactly one "
            f"*{INDEX_SUFFIX} (fix: give the checkpoint file or the index file)"
        )
    if target.name.endswith(INDEX_SUFFIX):
        return _sharded_side(path, target)
    _regular_file(target)
    try:
        with open(target, "rb") as handle:
            head = handle.read(9)
    except OSError as err:
        raise DiffRefused(f"{path}: cannot read: {err.strerror or err}") from None
    if target.suffix == ".safetensors" or looks_like_safetensors(head):
        entries = _safetensors_entries(target, path)
        return Side(path, "safetensors", entries)
    return _torch_side(path, allow)


def _refuse_unless_clean(report: Report) -> None:
    """Raise DiffRefused for an unreadable file, or one with findings (naming the globals)."""
    if report.error is not None:
        raise DiffRefused(f"{report.path}: unreadable: {report.error}")
    if report.findings:
        names = sorted({f.global_name for f in report.findings if f.global_name})
        what = ", ".join(names) if names else report.findings[0].detail
        raise DiffRefused(
            f"{report.path}: refused, torch.load(weights_only=True) would refuse it ({what}); "
            "nothing from it was run (fix: `pytest-ckpt audit` it; pass --allow module.Name "
            "for classes you trust)"
        )


def _torch_side(path: str, allow: tuple[str, ...]) -> Side:
    import torch

    allowlist = load_allowlist(allow)
    report = audit_file(path, allowlist=allowlist)
    _refuse_unless_clean(report)
    globals_ = [_resolve(name) for name in allow]
    try:
        with torch.serialization.safe_globals(globals_):
            state = torch.load(
                path, weights_only=True, mmap=report.format == "zip", map_location="cpu"
            )
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DiffRefused(f"{path}: torch.load(weights_only=True) failed: {first}") from None
    entries: dict[str, Entry] = {}
    for key, value in flatten(state):
        if key in entries:
            raise DiffRefused(f"{path}: two objects flatten to the key {key!r}")
        entries[key] = _value_entry(value)
    return Side(path, f"torch {report.format}", entries)


def _resolve(name: str) -> Any:
    """A class named by --allow (the user's choice to import it, as with safe_globals)."""
    import importlib

    module, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as err:
        raise DiffRefused(f"--allow {name}: cannot import it: {err}") from None


def _value_entry(value: Any) -> Entry:
    import torch

    if isinstance(value, torch.Tensor):
        return Entry(str(value.dtype).removeprefix("torch."), tuple(value.shape), lambda: value)
    return Entry(None, None, lambda: value)


def flatten(state: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(flat key, leaf) pairs: dicts and lists of tensors opened, as DCP flattens them."""
    import torch

    if isinstance(state, dict) and state:
        for key, value in state.items():
            yield from flatten(value, f"{prefix}{key}.")
    elif isinstance(state, list | tuple) and any(
        isinstance(item, torch.Tensor | dict | list | tuple) for item in state
    ):
        for index, value in enumerate(state):
            yield from flatten(value, f"{prefix}{index}.")
    else:
        yield (prefix[:-1] if prefix else "<root>"), state


def _safetensors_entries(path: Path, shown: str) -> dict[str, Entry]:
    """The audited header of one safetensors file, each tensor a view of its mapping."""
    import torch

    _refuse_unless_clean(audit_safetensors(path))
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        size = os.fstat(handle.fileno()).st_size
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)  # closed with its views
    start = 8 + length
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype_name = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype_name is None:
            raise DiffRefused(f"{shown}: {name!r}: dtype {info['dtype']} is not read by diff")
        dtype, shape = getattr(torch, dtype_name), tuple(info["shape"])
        begin, end = info["data_offsets"]
        if start + end > size:  # the audit checked the header against this file's size
            raise DiffRefused(f"{shown}: {name!r}: data past the end of the file")
        entries[name] = Entry(
            dtype_name, shape, _mapped_tensor(mapped, dtype, shape, start + begin, end - begin)
        )
    return entries


def _mapped_tensor(
    mapped: mmap.mmap, dtype: Any, shape: tuple[int, ...], offset: int, nbytes: int
) -> Callable[[], Any]:
    def read() -> Any:
        import torch

        if nbytes == 0:
            return torch.empty(shape, dtype=dtype)
        with warnings.catch_warnings():  # read-only on purpose: nothing writes through it
            warnings.filterwarnings("ignore", message="The given buffer is not writable")
            flat = torch.frombuffer(
                mapped, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset
            )
        return flat.reshape(shape)

    return read


def _regular_file(path: Path) -> int:
    """The size of `path`, a regular file: a FIFO would block the read and a device never
    ends, so anything else is refused before it is opened (as `audit` refuses it)."""
    try:
        return regular_file_size(path)
    except Unreadable as err:
        raise DiffRefused(f"{path}: unreadable: {err}") from None


_MAX_INDEX_BYTES = 64 << 20  # an index maps names to shard files: megabytes at the most


def _sharded_side(shown: str, index: Path) -> Side:
    """The shards a `*.safetensors.index.json` names (its `weight_map`), each audited."""
    if _regular_file(index) > _MAX_INDEX_BYTES:
        raise DiffRefused(
            f"{index}: a safetensors index past {_MAX_INDEX_BYTES >> 20} MiB: refusing to read it"
        )
    try:
        data = json.loads(index.read_text())
        weight_map = data["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DiffRefused(f"{index}: not a safetensors index: {err}") from None
    entries: dict[str, Entry] = {}
    shards: dict[str, dict[str, Entry]] = {}
    for name, shard in sorted(weight_map.items()):
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
            raise DiffRefused(f"{index}: {name!r}: shard {shard!r} is not a file beside the index")
        if shard not in shards:
            shards[shard] = _safetensors_entries(index.parent / shard, shard)
        if name not in shards[shard]:
            raise DiffRefused(f"{index}: {name!r}: not in its shard {shard}")
        entries[name] = shards[shard][name]
    return Side(shown, "safetensors (sharded)", entries)


def _dcp_side(path: str, allow: tuple[str, ...]) -> Side:
    """A DCP folder: audited whole, its metadata read by the restricted reader; each tensor
    read alone through `load_safely` when it is compared."""
    from pytest_ckpt.dcp import SafeFileSystemReader, audit_dcp_folder

    _refuse_unless_clean(audit_dcp_folder(path, allow=allow))
    try:
        metadata = SafeFileSystemReader(path, allow=allow).read_metadata()
    except CheckpointError as err:
        raise DiffRefused(str(err)) from None
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    entries = {}
    for fqn, info in metadata.state_dict_metadata.items():
        if not isinstance(info, TensorStorageMetadata):  # BytesStorageMetadata: DCP pickled it
            entries[fqn] = Entry(None, None, _dcp_reader(path, fqn, None, allow))
            continue
        properties = info.properties
        dtype = str(properties.dtype).removeprefix("torch.")
        template = (tuple(info.size), properties.dtype)
        entries[fqn] = Entry(dtype, tuple(info.size), _dcp_reader(path, fqn, template, allow))
    return Side(path, "DCP folder", entries)


def _dcp_reader(
    path: str, fqn: str, template: tuple[tuple[int, ...], Any] | None, allow: tuple[str, ...]
) -> Callable[[], Any]:
    def read() -> Any:
        import torch
        from torch.distributed.checkpoint.api import CheckpointException

        from pytest_ckpt.dcp import load_safely

        state = {fqn: None if template is None else torch.empty(template[0], dtype=template[1])}
        try:
            load_safely(state, path, allow=allow)
        except CheckpointError as err:
            raise DiffRefused(str(err)) from None
        except CheckpointException as err:  # a BaseException: a shard missing or cut short
            reason = next(iter(err.failures.values()))[0] if err.failures else err
            raise DiffRefused(f"{path}: {fqn!r}: cannot read: {reason}") from None
        return state[fqn]

    return read
