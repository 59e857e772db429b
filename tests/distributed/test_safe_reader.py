"""`SafeFileSystemReader`: a genuine folder loads exactly as with `FileSystemReader`; a
.metadata or a byte item that would call os.system is refused with an UnsafeCheckpointError
naming the global, and the command never runs."""

from __future__ import annotations

import io
import pathlib
import pickle

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException

from pytest_ckpt.audit.formats.dcp.metadata_allowlist import load_dcp_allowlist
from pytest_ckpt.audit.formats.dcp.metadata_unpickle import RestrictedMetadataUnpickler
from pytest_ckpt.checks.compare import diff_values
from pytest_ckpt.distributed.safe_reader import SafeFileSystemReader, load_safely
from pytest_ckpt.errors import CheckpointError, UnsafeCheckpointError
from tests.distributed.conftest import (
    RunsCommand,
    model_template,
    read_metadata,
    replace_byte_item,
    write_metadata,
)


def test_a_genuine_folder_loads_identically(fsdp2_folder) -> None:
    folder, full = fsdp2_folder
    plain, safe = model_template(), model_template()
    dcp.load(plain, storage_reader=FileSystemReader(folder))
    dcp.load(safe, storage_reader=SafeFileSystemReader(folder))
    assert diff_values(plain, safe) == []
    assert diff_values(full, safe["model"]) == []  # what the 2 ranks held, resharded to 1
    assert safe["extra"] == {"step": 7, "note": "hello", "sizes": [1, 2, 3]}
    ours, torchs = SafeFileSystemReader(folder), FileSystemReader(folder)
    ours.load_id = torchs.load_id  # a random id per reader
    assert ours.read_metadata() == torchs.read_metadata()


def _hostile(folder, marker):
    metadata = read_metadata(folder)
    metadata.storage_meta.save_id = RunsCommand(f"touch {marker}")
    write_metadata(folder, metadata)


def test_a_metadata_calling_os_system_is_refused_and_never_runs(dcp_copy, tmp_path) -> None:
    marker = tmp_path / "marker"
    _hostile(dcp_copy, marker)
    with pytest.raises(UnsafeCheckpointError, match=r"storage_meta\.save_id: unsupported global"):
        SafeFileSystemReader(dcp_copy).read_metadata()
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|nt|os)\.system"):
        load_safely(model_template(), dcp_copy)
    # plain dcp.load with the safe reader: DCP wraps the refusal, which stays on the reader
    reader = SafeFileSystemReader(dcp_copy)
    with pytest.raises(CheckpointException):
        dcp.load(model_template(), storage_reader=reader)
    assert isinstance(reader.refusal, UnsafeCheckpointError)
    assert not marker.exists()


def test_the_restricted_unpickler_alone_refuses_by_global(dcp_copy, tmp_path) -> None:
    marker = tmp_path / "marker"
    _hostile(dcp_copy, marker)
    data = (dcp_copy / ".metadata").read_bytes()
    unpickler = RestrictedMetadataUnpickler(io.BytesIO(data), load_dcp_allowlist(), source="m")
    with pytest.raises(UnsafeCheckpointError, match=r"m: refused global (posix|nt|os)\.system"):
        unpickler.load()
    assert not marker.exists()
    persistent = pickle.dumps(1, protocol=4).replace(b"K\x01", b"K\x01Q")  # BINPERSID
    with pytest.raises(UnsafeCheckpointError, match="persistent id"):
        RestrictedMetadataUnpickler(io.BytesIO(persistent), load_dcp_allowlist(), source="m").load()


def test_a_byte_item_calling_os_system_is_refused_and_never_runs(dcp_copy, tmp_path) -> None:
    marker = tmp_path / "marker"
    replace_byte_item(dcp_copy, "extra.note", RunsCommand(f"touch {marker}"))
    with pytest.raises(UnsafeCheckpointError, match=r"extra\.note: refused byte item: root:"):
        load_safely(model_template(), dcp_copy)
    assert not marker.exists()
    dcp.load(model_template(), storage_reader=FileSystemReader(dcp_copy))  # the control
    assert marker.exists()


class RecordingRestrictedUnpickler(RestrictedMetadataUnpickler):
    def find_class(self, module: str, name: str):
        self.named = [*getattr(self, "named", []), f"{module}.{name}"]
        return super().find_class(module, name)


def test_the_allowlist_is_read_from_torch_and_covers_a_genuine_save(fsdp2_folder) -> None:
    import torch.distributed.checkpoint.metadata as metadata

    allowlist = load_dcp_allowlist()
    for name in ("Metadata", "TensorStorageMetadata", "ChunkStorageMetadata", "MetadataIndex"):
        assert allowlist.objects[f"{metadata.__name__}.{name}"] is getattr(metadata, name)
    assert allowlist.objects["torch.Size"] is torch.Size
    assert allowlist.objects["torch.float32"] is torch.float32
    data = (fsdp2_folder[0] / ".metadata").read_bytes()
    recorder = RecordingRestrictedUnpickler(io.BytesIO(data), allowlist, source="genuine")
    recorder.load()
    assert {
        "torch.distributed.checkpoint.filesystem._StorageInfo",
        "torch.serialization._get_layout",
        f"{type(pathlib.Path()).__module__}.{type(pathlib.Path()).__qualname__}",
    } <= set(recorder.named)
    with pytest.raises(ValueError, match="cannot allow nowhere.Thing"):
        load_dcp_allowlist(["nowhere.Thing"])


def test_refusals_are_checkpoint_errors() -> None:
    assert issubclass(UnsafeCheckpointError, CheckpointError)


def test_the_static_verdict_and_the_restricted_unpickler_agree_on_mutated_metadata(
    fsdp2_folder,
) -> None:
    """Whenever the static machine finds nothing outside the allowlist, the restricted
    unpickler refuses nothing either (it may still find the file broken)."""
    import random

    from pytest_ckpt.audit.formats.dcp.metadata_scan import scan_metadata
    from pytest_ckpt.audit.formats.dcp.metadata_unpickle import unpickle_metadata_restricted
    from pytest_ckpt.audit.opcodes import MalformedPickle, TruncatedPickle
    from pytest_ckpt.errors import CheckpointLoadError

    allowlist = load_dcp_allowlist()
    genuine = (fsdp2_folder[0] / ".metadata").read_bytes()
    chooser = random.Random(0)
    clean = 0
    for _ in range(200):
        data = bytearray(genuine)
        data[chooser.randrange(len(data))] = chooser.randrange(256)
        try:
            findings = scan_metadata(bytes(data), allowlist)
        except (TruncatedPickle, MalformedPickle):
            continue
        if findings:
            continue
        clean += 1
        try:
            unpickle_metadata_restricted(bytes(data), allowlist, source="mutant")
        except UnsafeCheckpointError as refused:
            raise AssertionError(f"the static scan passed what it refused: {refused}") from None
        except CheckpointLoadError:
            pass
    assert clean >= 30  # mutants that reached the unpickler
