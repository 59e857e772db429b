"""Checks torch makes beyond the allowlist: each planted case is refused by the auditor, and
torch refuses it too (one torch process for the whole batch); the clean controls load."""

from __future__ import annotations

import struct
import zipfile

import pytest
import torch

from pytest_ckpt.audit import audit_file
from pytest_ckpt.audit.allowlist import load_allowlist
from tests.audit.conftest import torch_verdicts
from tests.audit.test_hostile import PROTO2, global_op, write_zip


def uni(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def call(name: str, *args: bytes) -> bytes:
    module, _, attr = name.rpartition(".")
    return global_op(module, attr) + b"(" + b"".join(args) + b"tR"


def storage(numel: int = 2, location: str = "cpu", kind: str = "FloatStorage") -> bytes:
    """The persistent id of write_zip's storage '0' (8 bytes: two float32), loaded."""
    return (
        b"("
        + uni("storage")
        + global_op("torch", kind)
        + uni("0")
        + uni(location)
        + (b"K" + bytes([numel]) + b"tQ")
    )


def tensor(
    offset: int = 0, size: bytes = b"K\x02\x85", stride: bytes = b"K\x01\x85", **kw
) -> bytes:
    """A `_rebuild_tensor_v2` record as torch.save writes it, with the view's fields given."""
    hooks = global_op("collections", "OrderedDict") + b")R"
    return (
        global_op("torch._utils", "_rebuild_tensor_v2")
        + b"("
        + storage(**kw)
        + b"K" + bytes([offset]) + size + stride + b"\x89" + hooks + b"tR"
    )  # fmt: skip


def in_dict(value: bytes) -> bytes:
    """{'w': value}, the shape of a state dict entry (so the fast path sees it too)."""
    return PROTO2 + b"}" + uni("w") + value + b"s."


REFUSED_BY_TORCH = {
    # tensor view against its storage (8 bytes = 2 floats)
    "size_past_storage": in_dict(tensor(size=b"K\x03\x85")),
    "offset_past_storage": in_dict(tensor(offset=1)),
    "stride_past_storage": in_dict(tensor(stride=b"K\x02\x85")),
    "rank_mismatch": in_dict(tensor(stride=b"K\x01K\x01\x86")),
    # record size must equal numel x element size (the archive holds 8 bytes)
    "record_bigger_than_numel": in_dict(tensor(numel=1, size=b"K\x01\x85")),
    # a storage on a device this host lacks, without map_location
    "cuda_storage_on_cpu_host": in_dict(tensor(location="cuda:0")),
    "unknown_location": in_dict(tensor(location="bogus")),
    # a storage first loaded on meta is not cached by torch: the next reference is checked
    "meta_then_cpu_out_of_bounds": PROTO2
    + b"("
    + storage(location="meta")
    + tensor(size=b"K\x03\x85")
    + b"t.",
    # arguments and arity of allow-listed callables
    "size_of_a_string": PROTO2 + call("torch.Size", uni("abc")) + b".",
    "bogus_device": PROTO2 + call("torch.device", uni("bogus")) + b".",
    "complex_of_zz": PROTO2 + call("builtins.complex", uni("zz")) + b".",
    "set_of_an_int": PROTO2 + call("builtins.set", b"K\x01") + b".",
    "encode_unknown_codec": PROTO2 + call("_codecs.encode", uni("x"), uni("nope")) + b".",
    "rebuild_wrong_arity": PROTO2 + call("torch._utils._rebuild_tensor_v2", storage()) + b".",
    "rebuild_from_type_into_size": PROTO2
    + call(
        "torch._tensor._rebuild_from_type_v2",
        global_op("torch", "Size"),
        global_op("torch", "Size"),
        b"(K\x01t",
        b"}",
    )
    + b".",
    "rebuild_from_type_one_tuple": PROTO2
    + global_op("torch._tensor", "_rebuild_from_type_v2")
    + b"K\x01\x85R.",  # the 40-byte REDUCE of the issue: a traceback before
    # BUILD states torch refuses
    "build_size": PROTO2 + call("torch.Size", b"(K\x01t") + b"}" + uni("a") + b"K\x01sb.",
    "build_device": PROTO2 + call("torch.device", uni("cpu")) + b"}" + uni("a") + b"K\x01sb.",
    "build_set": PROTO2 + b"\x8f}" + uni("a") + b"K\x01sb.",
    "build_complex": PROTO2 + call("builtins.complex", b"K\x01") + b"}" + uni("a") + b"K\x01sb.",
    "build_ordered_dict_int_state": PROTO2 + global_op("collections", "OrderedDict") + b")RK\x01b.",
    "build_tensor_dict_state": PROTO2 + tensor() + b"}" + uni("a") + b"K\x01sb.",
    # containers
    "setitems_odd_count": PROTO2 + b"}(" + uni("a") + b"K\x01" + uni("b") + b"u.",
    "unhashable_key": PROTO2 + b"}]K\x01s.",
    "append_onto_build_state": PROTO2 + b"}}}ab.",  # the 9-byte APPEND: a traceback before
}
LOADED_BY_TORCH = {
    "clean_tensor": in_dict(tensor()),
    "empty_view_past_the_end": in_dict(tensor(offset=9, size=b"K\x00\x85")),
    "meta_storage_is_not_bounds_checked": in_dict(tensor(location="meta", size=b"K\x05\x85")),
    "size_of_ints": PROTO2 + call("torch.Size", b"(K\x01K\x02t") + b".",
    "ordered_dict_state": PROTO2
    + global_op("collections", "OrderedDict")
    + b")R}"
    + uni("a")
    + b"K\x01sb.",
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted")
    cases = {**REFUSED_BY_TORCH, **LOADED_BY_TORCH}
    paths = {name: write_zip(folder / f"{name}.pt", data) for name, data in cases.items()}
    return paths, torch_verdicts(list(paths.values()))


@pytest.mark.parametrize("name", sorted(REFUSED_BY_TORCH))
def test_what_torch_refuses_beyond_the_allowlist_is_refused(planted, name) -> None:
    paths, verdicts = planted
    report = audit_file(paths[name])  # must not raise
    assert verdicts[str(paths[name])] is False, "the case must be one torch refuses"
    assert not report.loadable, report


@pytest.mark.parametrize("name", sorted(LOADED_BY_TORCH))
def test_what_torch_loads_stays_loadable(planted, name) -> None:
    paths, verdicts = planted
    assert verdicts[str(paths[name])] is True
    report = audit_file(paths[name])
    assert report.loadable, report


def test_map_location_says_what_the_verdict_assumes(planted) -> None:
    paths, _ = planted
    path = paths["cuda_storage_on_cpu_host"]
    assert not audit_file(path).loadable  # torch.load(path) on this CPU-only host
    assert audit_file(path, map_location="cpu").loadable  # torch.load(path, map_location="cpu")


def test_the_blocklist_is_tested_after_python2_name_mapping(tmp_path) -> None:
    path = write_zip(tmp_path / "intern.pt", PROTO2 + call("__builtin__.intern", uni("a")) + b".")
    report = audit_file(path, allowlist=load_allowlist(["sys.intern"]))
    assert not report.loadable
    assert any("blocked" in finding.detail for finding in report.findings), report.findings


@pytest.mark.parametrize(
    ("member", "value"),
    [("byteorder", b"middle"), (".storage_alignment", b"abc"),
     (".data/serialization_id", b"\xff\xfe")],
)  # fmt: skip
def test_archive_members_torch_reads_are_checked(tmp_path, member, value) -> None:
    source = tmp_path / "ok.pt"
    torch.save({"w": torch.zeros(2)}, source)
    path = tmp_path / "bad.pt"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            body = value if info.filename.endswith("/" + member) else src.read(info)
            dst.writestr(info.filename, body)
    report = audit_file(path)
    assert report.error is not None and member in report.error
    assert torch_verdicts([path]) == {str(path): False}


def test_an_allowed_users_function_is_never_called_by_the_audit(tmp_path, monkeypatch) -> None:
    """--allow admits a name; the auditor still calls nothing that is not torch's own."""
    marker = tmp_path / "called"
    (tmp_path / "user_hooks.py").write_text(
        f"def boom(*args):\n    open({str(marker)!r}, 'w').close()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    payload = PROTO2 + call("user_hooks.boom", uni("x")) + call("torch.Size", b"(K\x01t")
    path = write_zip(tmp_path / "hooks.pt", payload + b"\x86.")
    report = audit_file(path, allowlist=load_allowlist(["user_hooks.boom"]))
    assert not marker.exists()
    assert report.loadable and any("not cross-checked" in note for note in report.notes)
