"""The folder audit's plain-tensor step against its general check: on a genuine folder
and on mutants of it (metadata entries of other types or values, storage entries that point
elsewhere, tampered and broken items), `audit_dcp_folder` gives the very report it gives
with the step turned off; the step takes the genuine folder's later tensors; the harness
fails when the step takes an entry unchecked."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_ckpt.audit.formats.dcp import items
from pytest_ckpt.audit.formats.dcp.folder import audit_dcp_folder
from pytest_ckpt.audit.formats.dcp.items import PlainTensors
from tests.distributed.conftest import read_metadata, write_metadata

TARGET = "t4"  # a float32 tensor of 16: t0 and t2 (its length) come before it


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> Path:
    """Eight tensors of two shapes and dtypes (items of one block, and of a head and a
    tail: `item_templates`), and a byte item, in one shard file."""
    import torch.distributed.checkpoint as dcp

    folder = tmp_path_factory.mktemp("plain") / "genuine"
    state: dict[str, Any] = {
        f"t{i}": torch.randn(16) if i % 2 == 0 else torch.randn(64, 64, dtype=torch.float64)
        for i in range(8)
    }
    state["step"] = 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=folder)
    return folder


def _entry(metadata: Any) -> Any:
    return metadata.state_dict_metadata[TARGET]


def _info(metadata: Any, fqn: str = TARGET) -> Any:
    return next(v for k, v in metadata.storage_data.items() if k.fqn == fqn)


def _set(get: Callable[[Any], Any], name: str, value: Any) -> Callable[[Any], None]:
    return lambda metadata: setattr(get(metadata), name, value)


def _drop(get: Callable[[Any], Any], name: str) -> Callable[[Any], None]:
    return lambda metadata: delattr(get(metadata), name)


def _chunk(metadata: Any) -> Any:
    return _entry(metadata).chunks[0]


def _split(metadata: Any) -> None:
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata

    entry = _entry(metadata)
    entry.chunks = [
        ChunkStorageMetadata(torch.Size([0]), torch.Size([8])),
        ChunkStorageMetadata(torch.Size([8]), torch.Size([8])),
    ]


def _unkeyed(metadata: Any) -> None:
    del metadata.storage_data[next(k for k in metadata.storage_data if k.fqn == TARGET)]


def _swapped_infos(metadata: Any) -> None:
    first, second = _info(metadata, "t2"), _info(metadata)
    first.offset, second.offset = second.offset, first.offset


def _shape(metadata: Any) -> None:  # a whole chunk, not the item's shape
    entry = _entry(metadata)
    entry.size = entry.chunks[0].sizes = torch.Size([15])


METADATA_MUTANTS: dict[str, Callable[[Any], None]] = {
    "offset-moved": _set(_chunk, "offsets", torch.Size([1])),
    "sizes-short": _set(_chunk, "sizes", torch.Size([15])),
    "size-negative": lambda m: (
        _set(_entry, "size", torch.Size([-1]))(m),
        _set(_chunk, "sizes", torch.Size([-1]))(m),
    ),
    "shape-other": _shape,
    "size-larger": _set(_entry, "size", torch.Size([17])),  # the item's shape: a gap
    "split": _split,
    "chunks-tuple": lambda m: _set(_entry, "chunks", tuple(_entry(m).chunks))(m),
    "chunks-none": _set(_entry, "chunks", []),
    "size-tuple": _set(_entry, "size", (16,)),
    "offsets-tuple": _set(_chunk, "offsets", (0,)),
    "dtype-other": _set(lambda m: _entry(m).properties, "dtype", torch.float64),
    "dtype-str": _set(lambda m: _entry(m).properties, "dtype", "torch.float32"),
    "dtype-none": _set(lambda m: _entry(m).properties, "dtype", None),
    "no-chunks": _drop(_entry, "chunks"),
    "no-offsets": _drop(_chunk, "offsets"),
    "properties-size": lambda m: _set(_entry, "properties", _entry(m).size)(m),
    "no-storage-entry": _unkeyed,
    "storage-entry-size": lambda m: m.storage_data.update(
        {next(k for k in m.storage_data if k.fqn == TARGET): torch.Size([1])}
    ),
    "offset-negative": _set(_info, "offset", -1),
    "offset-past-end": _set(_info, "offset", 10**9),
    "offset-bool": _set(_info, "offset", True),
    "offset-swapped": _swapped_infos,
    "length-longer": lambda m: _set(_info, "length", _info(m).length + 1)(m),
    "length-float": lambda m: _set(_info, "length", float(_info(m).length))(m),
    "path-missing": _set(_info, "relative_path", "__9_0.distcp"),
    "path-outside": _set(_info, "relative_path", "../__0_0.distcp"),
    "no-path": _drop(_info, "relative_path"),
    "transforms-empty": _set(_info, "transform_descriptors", []),
    "transforms": _set(_info, "transform_descriptors", ["zstd"]),
}


def _in_items(old: bytes, new: bytes, every: bool) -> Callable[[bytes, list], bytes]:
    """Replace `old` with `new` in the target item's bytes, or in every item's."""

    def mutate(shard: bytes, spans: list) -> bytes:
        for start, length, fqn in spans:
            if every or fqn == TARGET:
                item = shard[start : start + length].replace(old, new)
                shard = shard[:start] + item + shard[start + length :]
        return shard

    return mutate


SHARD_MUTANTS: dict[str, Callable[[bytes, list], bytes]] = {
    "item-int16": _in_items(b"FloatStorage", b"ShortStorage", every=False),
    "items-int16": _in_items(b"FloatStorage", b"ShortStorage", every=True),
    "item-global": _in_items(b"_rebuild_tensor_v2", b"_rebuild_tensor_v9", every=False),
    "items-global": _in_items(b"_rebuild_tensor_v2", b"_rebuild_tensor_v9", every=True),
    "item-broken": _in_items(b"ctorch._utils", b"\xfftorch._utils", every=False),
    "items-broken": _in_items(b"ctorch._utils", b"\xfftorch._utils", every=True),
    "item-directory": _in_items(b"PK\x01\x02", b"PK\x01\x03", every=False),
    "truncated": lambda shard, spans: shard[: len(shard) * 2 // 3],
}


def _mutant(genuine: Path, where: Path, name: str) -> Path:
    folder = where / name
    shutil.copytree(genuine, folder)
    if name in METADATA_MUTANTS:
        metadata = read_metadata(folder)
        METADATA_MUTANTS[name](metadata)
        write_metadata(folder, metadata)
    elif name in SHARD_MUTANTS:
        shard = folder / "__0_0.distcp"
        spans = [(i.offset, i.length, k.fqn) for k, i in read_metadata(folder).storage_data.items()]
        shard.write_bytes(SHARD_MUTANTS[name](shard.read_bytes(), spans))
    return folder


def _general(self: PlainTensors, pending: Any, entries: Any, used: Any) -> tuple[int, Any]:
    return 0, next(pending, None)


def disagreements(folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Folders whose report with the plain-tensor step differs from the one without it."""
    with_step = {name: audit_dcp_folder(folder) for name, folder in folders.items()}
    with monkeypatch.context() as patch:
        patch.setattr(PlainTensors, "take", _general)
        without = {name: audit_dcp_folder(folder) for name, folder in folders.items()}
    return [
        f"{name}: {with_step[name]} != {without[name]}"
        for name in folders
        if with_step[name] != without[name]
    ]


@pytest.fixture(scope="module")
def mutants(genuine, tmp_path_factory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("mutants")
    names = ["genuine", *METADATA_MUTANTS, *SHARD_MUTANTS]
    return {name: _mutant(genuine, where, name) for name in names}


def test_the_step_gives_the_general_report_on_every_mutant(mutants, monkeypatch) -> None:
    assert disagreements(mutants, monkeypatch) == []
    found = {name: audit_dcp_folder(folder).findings for name, folder in mutants.items()}
    assert found["genuine"] == () and sum(1 for f in found.values() if f) > 20


def test_the_step_takes_the_tensors_after_each_template(genuine, monkeypatch) -> None:
    taken: list[int] = []
    take = PlainTensors.take

    def counting(self, pending, entries, used):
        count, rest = take(self, pending, entries, used)
        taken.append(count)
        return count, rest

    monkeypatch.setattr(PlainTensors, "take", counting)
    assert audit_dcp_folder(genuine).findings == ()
    assert sum(taken) == 6  # t2..t7: t0 and t1 are their lengths' first items


def test_the_harness_fails_when_the_step_takes_entries_unchecked(mutants, monkeypatch) -> None:
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    def unchecked(self, pending, entries, used):  # one chunk: taken, as the general check
        taken = 0  # counts it, but nothing else checked
        for fqn, entry in pending:
            chunks = getattr(entry, "chunks", None)
            if type(entry) is not TensorStorageMetadata or type(chunks) is not list:
                return taken, (fqn, entry)
            if len(chunks) != 1 or not hasattr(chunks[0], "offsets"):
                return taken, (fqn, entry)
            used.add((fqn, tuple(chunks[0].offsets)))
            taken += 1
        return taken, None

    monkeypatch.setattr(items.PlainTensors, "take", unchecked)
    found = disagreements(mutants, monkeypatch)
    assert len(found) > 15 and not any(name.startswith("genuine:") for name in found)
