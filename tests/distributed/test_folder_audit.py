"""`pytest-ckpt audit DIR` on DCP folders: a genuine 2-rank FSDP2 save is "ok" in one line;
a hostile .metadata, a truncated shard, overlapping chunks, a gap, a wrong dtype and an
unsafe byte item are findings by path; nothing from the folder runs."""

from __future__ import annotations

import datetime
import json

import pytest
import torch

from pytest_ckpt.audit.formats.dcp.folder import audit_dcp_folder, is_dcp_folder
from pytest_ckpt.audit.render import render_text
from pytest_ckpt.cli import main
from tests.audit.test_hostile import SELF_BUILDS, capped_cli
from tests.distributed.conftest import (
    RunsCommand,
    read_metadata,
    replace_byte_item,
    write_metadata,
)


def test_a_genuine_fsdp2_folder_is_ok_in_one_line(fsdp2_folder, capsys) -> None:
    folder, _full = fsdp2_folder
    assert is_dcp_folder(folder)
    report = audit_dcp_folder(folder)
    assert report.loadable and report.findings == () and report.notes == ()
    text = render_text([report])
    assert text.count("\n") == 0
    assert text.startswith(f"{folder}: ok (dcp, 2 shard file(s), ")
    assert "dcp.load runs none of its code, every chunk is in place" in text
    assert main(["audit", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == text


def test_json_and_sarif_for_folders(fsdp2_folder, dcp_copy, capsys) -> None:
    metadata = read_metadata(dcp_copy)
    metadata.storage_meta.save_id = RunsCommand("true")
    write_metadata(dcp_copy, metadata)
    assert main(["audit", "--json", str(fsdp2_folder[0]), str(dcp_copy)]) == 1
    genuine, hostile = json.loads(capsys.readouterr().out)["files"]
    assert genuine["format"] == "dcp" and genuine["loadable"] and genuine["summary"]
    assert hostile["loadable"] is False
    assert hostile["findings"][0]["path"] == ".metadata:root.storage_meta.save_id"
    assert main(["audit", "--sarif", str(dcp_copy)]) == 1
    (result,) = json.loads(capsys.readouterr().out)["runs"][0]["results"]
    assert result["ruleId"] == "unsupported-global"
    assert result["properties"]["global"] in ("posix.system", "os.system", "nt.system")


def test_hostile_metadata_is_a_finding_by_path_and_never_runs(dcp_copy, tmp_path) -> None:
    marker = tmp_path / "marker"
    metadata = read_metadata(dcp_copy)
    metadata.storage_meta.save_id = RunsCommand(f"touch {marker}")
    write_metadata(dcp_copy, metadata)
    report = audit_dcp_folder(dcp_copy)
    (finding,) = report.findings
    assert finding.path == ".metadata:root.storage_meta.save_id"
    assert finding.global_name.endswith(".system") and "do not load this folder" in finding.fix
    assert report.notes == ("the shard files were not checked: .metadata is not safe to unpickle",)
    assert not marker.exists()
    # the control: the file is live, torch's own reader runs it
    from torch.distributed.checkpoint import FileSystemReader

    FileSystemReader(dcp_copy).read_metadata()
    assert marker.exists()


def test_a_metadata_built_with_itself_is_a_finding(tmp_path) -> None:
    folders = [tmp_path / f"folder{i}" for i in range(len(SELF_BUILDS))]
    for folder, payload in zip(folders, SELF_BUILDS.values(), strict=True):
        folder.mkdir()
        (folder / ".metadata").write_bytes(b"\x80\x04" + payload)  # both scans, then more
    result = capped_cli(*folders)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stdout.count("BUILD (setting object state) on builtins.") == len(folders)
    assert "Traceback" not in result.stderr


def test_a_truncated_shard_is_found_with_its_entry(dcp_copy) -> None:
    shard = dcp_copy / "__1_0.distcp"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    report = audit_dcp_folder(dcp_copy)
    kinds = {f.kind for f in report.findings}
    assert kinds == {"dcp-out-of-file"}
    assert all(f.path.startswith("storage_data[") for f in report.findings)
    assert "__1_0.distcp are past its end" in report.findings[0].detail
    assert main(["audit", str(dcp_copy)]) == 1


def _sharded_tensor(metadata):
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    return next(
        (fqn, entry)
        for fqn, entry in metadata.state_dict_metadata.items()
        if isinstance(entry, TensorStorageMetadata) and len(entry.chunks) == 2
    )


def test_overlapping_chunks_are_found(dcp_copy) -> None:
    metadata = read_metadata(dcp_copy)
    fqn, entry = _sharded_tensor(metadata)
    second = entry.chunks[1]
    second.offsets = torch.Size([second.offsets[0] - 1, *second.offsets[1:]])
    write_metadata(dcp_copy, metadata)
    report = audit_dcp_folder(dcp_copy)
    overlap = [f for f in report.findings if f.kind == "dcp-chunks"]
    assert len(overlap) == 1 and overlap[0].path == f"state_dict_metadata[{fqn!r}]"
    assert overlap[0].detail.startswith("chunk 0 (offsets [0") and "overlap" in overlap[0].detail
    # the moved chunk no longer has a storage entry at its offsets, and says so too
    assert {f.kind for f in report.findings} == {"dcp-chunks", "dcp-missing-storage"}


def test_a_gap_an_out_of_bounds_chunk_and_a_wrong_dtype_are_found(dcp_copy) -> None:
    metadata = read_metadata(dcp_copy)
    tensors = metadata.state_dict_metadata
    gap, outside, cast = "model.0.weight", "model.0.bias", "model.2.weight"
    last = tensors[gap].chunks[-1]
    last.sizes = torch.Size([last.sizes[0] - 1, *last.sizes[1:]])
    first = tensors[outside].chunks[0]
    first.offsets = torch.Size([o + 100 for o in first.offsets])
    tensors[cast].properties.dtype = torch.float16
    write_metadata(dcp_copy, metadata)
    found = {(f.kind, f.path.split(" ")[-1]): f.detail for f in audit_dcp_folder(dcp_copy).findings}
    assert "a gap" in found[("dcp-chunks", f"state_dict_metadata[{gap!r}]")]
    assert (
        "lies outside the shape [8]" in found[("dcp-chunks", f"state_dict_metadata[{outside!r}]")]
    )
    assert (
        "holds torch.float32, the metadata says torch.float16" in found[("dcp-dtype", f"({cast})")]
    )


def test_a_byte_item_torch_would_refuse_is_found_by_path(dcp_copy) -> None:
    start = replace_byte_item(dcp_copy, "extra.note", {"when": datetime.date(2026, 1, 1)})
    (finding,) = audit_dcp_folder(dcp_copy).findings
    assert finding.path == f"__0_0.distcp@{start} (extra.note):root['when']"
    assert finding.global_name == "datetime.date"


def test_storage_outside_the_folder_and_missing_files_are_found(dcp_copy) -> None:
    metadata = read_metadata(dcp_copy)
    infos = list(metadata.storage_data.values())
    infos[0].relative_path = "../elsewhere.distcp"
    infos[1].relative_path = "__7_0.distcp"
    write_metadata(dcp_copy, metadata)
    kinds = sorted(f.kind for f in audit_dcp_folder(dcp_copy).findings)
    assert kinds == ["dcp-bad-path", "dcp-missing-file"]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, "no .metadata: not a DCP folder"),
        (b"", "empty .metadata"),
        (b"\x80\x04\x95", "truncated .metadata"),
        (b"\x80\x04K\x01.", "is a pickled int, not DCP Metadata"),
    ],
)
def test_an_unreadable_metadata_is_exit_2_in_one_line(dcp_copy, content, error, capsys) -> None:
    if content is None:
        (dcp_copy / ".metadata").unlink()
    else:
        (dcp_copy / ".metadata").write_bytes(content)
    report = audit_dcp_folder(dcp_copy)
    assert report.error is not None and error in report.error and "\n" not in report.error


def test_a_file_of_a_dcp_folder_says_to_audit_the_folder(fsdp2_folder, capsys) -> None:
    folder = fsdp2_folder[0]
    assert main(["audit", str(folder / ".metadata"), str(folder / "__0_0.distcp")]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{folder / name}: unreadable: part of a DCP folder, audit the folder: "
        f"pytest-ckpt audit {folder}"
        for name in (".metadata", "__0_0.distcp")
    ]
