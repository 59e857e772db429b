"""What `dcp.load`'s reader does with `.metadata` beyond unpickling it, which the folder audit
must model (the second red-team round of issue 20); each case is checked against the real
loader in a subprocess:

- when `FileSystemReader.read_metadata` raises, `dcp.load` reads a rank-local
  `__<rank>.metadata` instead, with plain pickle;
- below protocol 4, Python's unpickler looks a dotted global name up as one attribute;
- DCP uses `state_dict_metadata`, `storage_data` and a tensor's `size` as they are;
- Python's C unpickler sizes its memo to the largest PUT index;
- an Enum call returns the shared member: a BUILD on it changes the class for the process.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from pytest_ckpt.audit.formats.dcp.folder import audit_dcp_folder
from tests.audit.test_hostile import capped_cli
from tests.distributed.conftest import RunsCommand, read_metadata, write_metadata

STATE = 'state = {f"layer{i}.weight": torch.zeros(16) for i in range(4)}'


@pytest.fixture
def folder(tmp_path) -> Path:
    """A plain one-process DCP save of four tensors."""
    import torch.distributed.checkpoint as dcp

    target = tmp_path / "ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no process group: one process saves
        dcp.save({f"layer{i}.weight": torch.randn(16) for i in range(4)}, checkpoint_id=target)
    return target


def real_loads(folders: list[Path]) -> list[str]:
    """`dcp.load` of each folder in one fresh process: "ok" or the error's type and text."""
    code = textwrap.dedent(
        f"""
        import logging, sys, warnings
        warnings.simplefilter("ignore"); logging.disable(logging.CRITICAL)
        import torch, torch.distributed.checkpoint as dcp
        for path in sys.argv[1:]:
            {STATE}
            try:
                dcp.load(state, checkpoint_id=path)
                print("ok")
            except BaseException as err:  # CheckpointException is a BaseException
                print(type(err).__name__, str(err).replace(chr(10), " ")[:300])
        """
    )
    args = [sys.executable, "-c", code, *map(str, folders)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.splitlines()


def test_a_metadata_dcp_cannot_finish_reading_sends_it_to_the_rank_local_one(
    folder, tmp_path
) -> None:
    marker = tmp_path / "marker"
    metadata = read_metadata(folder)
    metadata.storage_meta = 1  # an int: read_metadata cannot set its load_id
    write_metadata(folder, metadata)
    (folder / "__0.metadata").write_bytes(pickle.dumps(RunsCommand(f"touch {marker}")))
    report = audit_dcp_folder(folder)
    assert not report.loadable
    by_path = {finding.path: finding for finding in report.findings}
    assert "storage_meta is a int, not StorageMeta" in by_path[".metadata"].detail
    rank_local = by_path["__0.metadata:root"]
    assert rank_local.global_name.endswith(".system") and "do not load" in rank_local.fix
    assert not marker.exists()
    real_loads([folder])  # the control: dcp.load falls back to __0.metadata and runs it
    assert marker.exists()


def test_a_rank_local_metadata_is_audited_beside_a_good_one(folder, tmp_path) -> None:
    marker = tmp_path / "marker"
    (folder / "__1.metadata").write_bytes(pickle.dumps(RunsCommand(f"touch {marker}")))
    (finding,) = audit_dcp_folder(folder).findings
    assert finding.path == "__1.metadata:root" and "in __1.metadata" in finding.detail
    (folder / "__1.metadata").write_bytes((folder / ".metadata").read_bytes())
    report = audit_dcp_folder(folder)  # a genuine copy: what an uncoordinated save writes
    assert report.loadable, report.findings
    assert "1 rank-local metadata file(s) scanned" in " ".join(report.notes)
    (folder / "__1.metadata").write_bytes(b"\x80\x04(")  # cut short: cannot be vouched for
    (finding,) = audit_dcp_folder(folder).findings
    assert finding.kind == "dcp-rank-metadata" and finding.path == "__1.metadata"
    assert not marker.exists()


def test_a_rank_local_metadata_that_is_no_regular_file_is_not_opened(folder) -> None:
    os.mkfifo(folder / "__0.metadata")  # opening it for reading would wait for a writer
    (folder / "__1.metadata").mkdir()
    result = capped_cli(folder, timeout=60)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "__0.metadata: not a regular file (a FIFO)" in result.stdout
    assert "__1.metadata: is a directory" in result.stdout


def test_a_dotted_global_below_protocol_4_is_not_found_by_pythons_unpickler(folder) -> None:
    data = pickle.dumps(read_metadata(folder), protocol=2)
    genuine = b"ctorch.distributed.checkpoint.metadata\nMetadata\n"
    assert data.count(genuine) == 1
    (folder / ".metadata").write_bytes(data)
    assert audit_dcp_folder(folder).loadable  # protocol 2 as such is fine
    dotted = data.replace(genuine, b"ctorch.distributed.checkpoint\nmetadata.Metadata\n")
    (folder / ".metadata").write_bytes(dotted)
    report = audit_dcp_folder(folder)
    (finding,) = report.findings
    assert "below pickle protocol 4" in finding.detail and finding.global_name is None
    assert real_loads([folder])[0].startswith("CheckpointException")
    with pytest.raises(AttributeError):  # what dcp.load's reader does: the name is not found
        pickle.loads(dotted)  # (our own save, renamed: trusted)


def _as_pairs(metadata, field: str) -> None:
    setattr(metadata, field, list(getattr(metadata, field).items()))


def _size_as_list(metadata) -> None:
    entry = metadata.state_dict_metadata["layer0.weight"]
    entry.size = list(entry.size)


EDITS = {
    "state_dict_metadata as pairs": lambda m: _as_pairs(m, "state_dict_metadata"),
    "storage_data as pairs": lambda m: _as_pairs(m, "storage_data"),
    "a tensor's size as a list": _size_as_list,
}


def test_fields_dcp_uses_as_they_are_must_have_its_types(folder, tmp_path) -> None:
    folders = []
    for i, edit in enumerate(EDITS.values()):
        copy = tmp_path / f"edit{i}"
        copy.mkdir()
        for part in folder.iterdir():
            (copy / part.name).write_bytes(part.read_bytes())
        metadata = read_metadata(copy)
        edit(metadata)
        write_metadata(copy, metadata)
        folders.append(copy)
    for name, copy in zip(EDITS, folders, strict=True):
        report = audit_dcp_folder(copy)
        assert not report.loadable, name
        assert {finding.kind for finding in report.findings} == {"dcp-malformed"}, name
    assert not any(line == "ok" for line in real_loads(folders))


def test_a_memo_index_past_the_file_is_a_finding_not_an_allocation(folder) -> None:
    genuine = (folder / ".metadata").read_bytes()
    huge = genuine[:-1] + b"Nr" + struct.pack("<I", 2**31) + b"0."  # NONE LONG_BINPUT POP
    (folder / ".metadata").write_bytes(huge)
    result = capped_cli(folder)  # 3 GB: the unpickler would want 32 GB for this index
    assert result.returncode == 1, result.stderr[-2000:]
    assert "memo index 2147483648" in result.stdout and "Traceback" not in result.stderr
    small = genuine[:-1] + b"Nr" + struct.pack("<I", len(genuine)) + b"0."
    (folder / ".metadata").write_bytes(small)  # an index the file could have filled
    assert audit_dcp_folder(folder).loadable


def test_a_build_on_an_enum_member_is_a_finding_and_changes_nothing(folder) -> None:
    module = b"torch.distributed.checkpoint.metadata"
    build = (
        b"\x8c" + bytes([len(module)]) + module + b"\x8c\x14_MEM_FORMAT_ENCODING\x93K\x00\x85R"
        b"}(\x8c\x07_value_K\x07ub0."
    )  # _MEM_FORMAT_ENCODING(0), then BUILD {'_value_': 7} on it, POP, before STOP
    (folder / ".metadata").write_bytes((folder / ".metadata").read_bytes()[:-1] + build)
    code = textwrap.dedent(
        f"""
        import warnings; warnings.simplefilter("ignore")
        from pytest_ckpt.audit.formats.dcp.folder import audit_dcp_folder
        from torch.distributed.checkpoint.metadata import _MEM_FORMAT_ENCODING as E
        report = audit_dcp_folder({str(folder)!r})
        print([f.detail for f in report.findings], E.TORCH_CONTIGUOUS_FORMAT.value)
        import pickle; pickle.loads(open({str(folder / ".metadata")!r}, "rb").read())
        print(E.TORCH_CONTIGUOUS_FORMAT.value)  # the control: plain pickle changes it
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    audited, after_pickle = result.stdout.splitlines()
    assert "BUILD on an Enum member" in audited and audited.endswith(" 0")
    assert after_pickle == "7"
