"""A member torch reads by name that miniz does not extract (its central directory entry
marks it a directory) reaches torch as an uninitialised
buffer: the file is refused, since no verdict on heap contents holds. Checked against torch's
reader in a fresh process; an archive that merely holds a directory entry still loads."""

from __future__ import annotations

import struct
import subprocess
import sys
import zipfile

import torch

from pytest_ckpt.audit import audit_file
from pytest_ckpt.audit.formats.zip_directory import unextracted_member


def _saved(tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "model.pt"
    torch.save({"w": torch.arange(4.0)}, path)
    return path


def _edit_entry(path, member: str, edit) -> None:
    """Apply `edit(data, entry_offset)` to the central directory entry of `member`."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at != -1:
        (length,) = struct.unpack_from("<H", data, at + 28)
        if data[at + 46 : at + 46 + length].decode().endswith("/" + member):
            edit(data, at)
            path.write_bytes(bytes(data))
            return
        at = data.find(b"PK\x01\x02", at + 46)
    raise AssertionError(f"no entry for {member}")


def _directory_bit(data, at) -> None:
    data[at + 38] |= 0x10  # external attributes: MS-DOS directory


def torch_reads_the_bytes_stored(*cases: tuple[object, str]) -> list[bool]:
    """For each (file, member): whether torch's reader, in one fresh process (no heap left
    over from this one), returns the member's bytes as stored."""
    code = (
        "import sys, zipfile, torch\n"
        "for path, member in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    reader = torch._C.PyTorchFileReader(path)\n"
        "    with zipfile.ZipFile(path) as z:\n"
        "        wanted = '/' + member.lower()  # torch's reader ignores case\n"
        "        name = next(n for n in z.namelist() if n.lower().endswith(wanted))\n"
        "        stored = z.read(name)\n"
        "    print(bytes(reader.get_record(member)) == stored)\n"
    )
    args = [str(part) for case in cases for part in case]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    return [line == "True" for line in out.stdout.split()]


MEMBERS = ["data.pkl", "byteorder", ".format_version"]


def test_a_member_torch_reads_but_miniz_does_not_extract_is_refused(tmp_path) -> None:
    paths = [_saved(tmp_path / str(i)) for i in range(len(MEMBERS))]
    for path, member in zip(paths, MEMBERS, strict=True):
        assert audit_file(path).loadable
        _edit_entry(path, member, _directory_bit)
        report = audit_file(path)
        assert report.error is not None and f"member {member}" in report.error
        assert "uninitialised" in report.error
    clean = _saved(tmp_path)  # the control: a member torch reads as stored
    cases = [(clean, MEMBERS[0]), *zip(paths, MEMBERS, strict=True)]
    assert torch_reads_the_bytes_stored(*cases) == [True, False, False, False]


def _zip64_directory_copy(path, member: str) -> None:
    """Leave the 32-bit end record on the clean central directory and point the zip64 one
    (torch.save writes both; miniz reads the zip64 one) at a copy whose `member` entry has
    the directory bit."""
    data = path.read_bytes()
    end = data.rfind(b"PK\x05\x06")
    _, _, _, on_disk, entries, size, offset, _ = struct.unpack_from("<4sHHHHIIH", data, end)
    copy = tmp = path.with_suffix(".copy")
    tmp.write_bytes(data[offset : offset + size])
    _edit_directory(tmp, member, _directory_bit)
    copy = tmp.read_bytes()
    body = data[:offset] + data[offset : offset + size]
    copy_at = len(body)
    body += copy
    record_at = len(body)
    body += struct.pack(
        "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, size, copy_at
    )
    body += struct.pack("<4sIQI", b"PK\x06\x07", 0, record_at, 1)
    body += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, on_disk, entries, size, offset, 0)
    path.write_bytes(body)


def _edit_directory(path, member: str, edit) -> None:
    """`_edit_entry` on a file that is a central directory alone."""
    data = bytearray(path.read_bytes())
    at = 0
    while data[at : at + 4] == b"PK\x01\x02":
        length, extra, comment = struct.unpack_from("<HHH", data, at + 28)
        if data[at + 46 : at + 46 + length].decode().endswith("/" + member):
            edit(data, at)
        at += 46 + length + extra + comment
    path.write_bytes(bytes(data))


def test_the_directory_torch_reads_is_the_zip64_one(tmp_path) -> None:
    path = _saved(tmp_path)
    _zip64_directory_copy(path, "version")
    report = audit_file(path)
    assert report.error is not None and "member version" in report.error


def test_member_names_are_looked_up_ignoring_case_as_torch_does(tmp_path) -> None:
    path = _saved(tmp_path)
    data = path.read_bytes()
    folder = data[30 : 30 + struct.unpack_from("<H", data, 26)[0]].split(b"/")[0]
    path.write_bytes(data.replace(folder + b"/version", folder + b"/VERSION"))  # both headers
    assert torch_reads_the_bytes_stored((path, "version")) == [True]  # torch finds VERSION
    _edit_entry(path, "VERSION", _directory_bit)
    report = audit_file(path)
    assert report.error is not None and "member version" in report.error


def test_two_members_whose_names_differ_in_case_are_duplicates(tmp_path) -> None:
    path = _saved(tmp_path)
    with zipfile.ZipFile(path, "a") as archive:
        folder = archive.namelist()[0].split("/")[0]
        archive.writestr(f"{folder}/BYTEORDER", b"big")
    report = audit_file(path)
    assert report.error is not None and "appears 2 times" in report.error
    assert "ignoring case" in report.error


def test_the_version_record_read_by_torchs_constructor_is_checked(tmp_path) -> None:
    path = _saved(tmp_path)
    _edit_entry(path, "version", _directory_bit)
    report = audit_file(path)
    assert report.error is not None and "member version" in report.error


def test_a_directory_entry_torch_never_reads_is_no_reason_to_refuse(tmp_path) -> None:
    path = _saved(tmp_path)
    with zipfile.ZipFile(path, "a") as archive:  # what re-zipping a folder adds
        folder = archive.namelist()[0].split("/")[0]
        archive.writestr(zipfile.ZipInfo(f"{folder}/extra/"), b"")
    report = audit_file(path)
    assert report.error is None and report.loadable
    assert torch.load(path, weights_only=True)["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_an_archive_whose_end_record_misleads_is_left_to_torchs_reader() -> None:
    def read_at(offset: int, count: int) -> bytes:
        return data[offset : offset + count]

    data = b"PK\x05\x06" + struct.pack("<4H2IH", 0, 0, 1, 1, 46, 10_000, 0)
    assert unextracted_member(read_at, len(data), ["data.pkl"]) is None


def test_a_dcp_tensor_item_with_a_directory_entry_is_one_stable_finding(tmp_path) -> None:
    import warnings

    import torch.distributed.checkpoint as dcp

    from pytest_ckpt.audit.formats.dcp.folder import audit_dcp_folder
    from tests.distributed.conftest import read_metadata

    folder = tmp_path / "ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one process saves
        dcp.save({f"layer{i}.weight": torch.randn(16) for i in range(8)}, checkpoint_id=folder)
    (info,) = (v for k, v in read_metadata(folder).storage_data.items() if k.fqn == "layer5.weight")
    shard = folder / info.relative_path
    item = tmp_path / "item.pt"
    item.write_bytes(shard.read_bytes()[info.offset : info.offset + info.length])
    _edit_entry(item, "version", _directory_bit)
    data = bytearray(shard.read_bytes())
    data[info.offset : info.offset + info.length] = item.read_bytes()
    shard.write_bytes(bytes(data))
    verdicts = {tuple(f.detail for f in audit_dcp_folder(folder).findings) for _ in range(3)}
    ((detail,),) = verdicts  # one finding, the same each time: the other items are fine
    assert "archive member version is marked as a directory" in detail


def test_a_zip64_end_record_miniz_ignores_leaves_the_32_bit_one_in_force(tmp_path) -> None:
    path = _saved(tmp_path)
    _edit_entry(path, "version", _directory_bit)
    data = path.read_bytes()
    record = data.rfind(b"PK\x06\x06")
    path.write_bytes(data[:record] + b"XX\x06\x06" + data[record + 4 :])  # not a zip64 record
    report = audit_file(path)
    assert report.error is not None and "member version" in report.error
