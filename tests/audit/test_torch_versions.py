"""Where torch versions differ in what torch.load(weights_only=True) checks, the auditor follows
the installed torch. These pass on every torch `make test-torch TORCH=X.Y.Z` runs them on; on the
pinned one they pin today's behaviour."""

from __future__ import annotations

import pickle
import struct
import zipfile

import torch

from pytest_ckpt.audit import audit_file
from pytest_ckpt.audit.formats.legacy import LEGACY_MAGIC
from tests.audit.conftest import torch_verdicts
from tests.audit.pickle_grammar import archive_members

DECLINED = {"resource-limit", "cannot-verify"}  # by design: the auditor does not vouch


def test_sparse_tensors_are_never_called_ok_where_this_torch_refuses_them(tmp_path) -> None:
    """torch 2.14 validates sparse indices under weights_only whatever the global setting
    (2.13 only under check_sparse_tensor_invariants); an index past the size is then refused,
    and the audit may not say ok. 2.15 keeps the list to validate thread-local."""
    good = torch.sparse_coo_tensor([[0, 1]], [1.0, 2.0], (2,), check_invariants=True)
    bad = torch.sparse_coo_tensor([[5]], [1.0], (2,), check_invariants=False)
    paths = []
    for name, tensor in (("good", good), ("bad", bad)):
        paths.append(tmp_path / f"{name}.pt")
        torch.save({"s": tensor}, paths[-1])
    torch_says = torch_verdicts(paths)
    for path in paths:
        report = audit_file(path)
        assert report.error is None, report.error
        if report.loadable:
            assert torch_says[str(path)], f"{path.name}: audit says ok, torch refuses"
        else:
            kinds = {finding.kind for finding in report.findings}
            assert not torch_says[str(path)] or kinds <= DECLINED, (path.name, kinds)
    if torch_says[str(paths[0])] and not torch_says[str(paths[1])]:  # torch >= 2.14
        assert not audit_file(paths[1]).loadable


def _rebuild(kind: bytes, numel: int) -> bytes:
    """`_rebuild_tensor_v2` of storage record "0" as `kind` with `numel` elements, size (1,)."""
    return (
        b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\n"
        + kind
        + b"\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK"
        + bytes([numel])
        + b"tQK\x00(K\x01t(K\x01t\x89ccollections\nOrderedDict\n)RtR"
    )


def test_a_record_read_under_two_dtypes_gets_this_torchs_verdict(tmp_path) -> None:
    """torch <= 2.14 hands the cached storage out whatever dtype is asked; 2.15 re-wraps it
    (same byte length) or reloads it under the new dtype, whose record size then mismatches
    (found by the nightly differential on 2.15: the audit said ok, torch refused)."""
    members = archive_members({"w": torch.zeros(8)})  # record "0": 32 bytes
    paths = []
    for numel in (4, 9):  # 4 int64s are the record's 32 bytes; 9 are not
        data = b"\x80\x02}(X\x01\x00\x00\x00a" + _rebuild(b"FloatStorage", 8)
        data += b"X\x01\x00\x00\x00b" + _rebuild(b"LongStorage", numel) + b"u."
        paths.append(tmp_path / f"long{numel}.pt")
        with zipfile.ZipFile(paths[-1], "w") as archive:
            archive.writestr("archive/data.pkl", data)
            for name, body in members.items():
                if name != "data.pkl":
                    archive.writestr(f"archive/{name}", body)
    torch_says = torch_verdicts(paths)
    assert torch_says[str(paths[0])], "same byte length: every torch loads it"
    for path in paths:
        assert audit_file(path).loadable == torch_says[str(path)], path.name


def _legacy_rebuild(kind: bytes, numel: int) -> bytes:
    """The legacy format's `_rebuild_tensor_v2` of root "0" as `kind`, size (1,)."""
    return (
        b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\n"
        + kind
        + b"\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK"
        + bytes([numel])
        + b"NtQK\x00(K\x01t(K\x01t\x89ccollections\nOrderedDict\n)RtR"
    )


def test_a_legacy_root_read_under_two_dtypes_gets_this_torchs_verdict(tmp_path) -> None:
    """The legacy loader: torch <= 2.14 hands out a root with data whatever dtype is asked;
    2.15 re-wraps it (same byte length) or gives a new empty storage of the new dtype."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}
    head = b"".join(pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, 1001, sys_info))
    tail = pickle.dumps(["0"], protocol=2) + struct.pack("<q", 8) + bytes(32)
    paths = []
    for numel in (4, 9):
        data = b"\x80\x02}(X\x01\x00\x00\x00a" + _legacy_rebuild(b"FloatStorage", 8)
        data += b"X\x01\x00\x00\x00b" + _legacy_rebuild(b"LongStorage", numel) + b"u."
        paths.append(tmp_path / f"legacy{numel}.pt")
        paths[-1].write_bytes(head + data + tail)
    torch_says = torch_verdicts(paths)
    assert torch_says[str(paths[0])], "same byte length: every torch loads it"
    for path in paths:
        assert audit_file(path).loadable == torch_says[str(path)], path.name
