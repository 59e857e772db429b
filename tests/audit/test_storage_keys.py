"""Storage keys torch.save never writes, and legacy headers it never writes, that torch still
loads. torch finds a zip storage at `f"data/{key}"` whatever object the key is, caches it by
the key (so `0`, `"0"` and `b"0"` are three storages) and reads a legacy header pickle as any
pickle whose value is the magic number. Each file is crafted by rewriting torch.save's output
(the key in data.pkl and the member's name), and each verdict is held against
torch.load(weights_only=True) in a subprocess: loads -> ok, refuses -> not ok."""

from __future__ import annotations

import io
import struct
import sys
import zipfile

import pytest
import torch

from pytest_ckpt.audit import audit_file
from tests.audit.conftest import torch_verdicts
from tests.forked_runs import run_python

SAVED_KEY = b"X\x01\x00\x00\x000"  # BINUNICODE "0": the key torch.save gives the first storage
LONG_KEY = "k" * 100  # past the 80 characters the auditor keeps of a string


def uni(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def as_bytes(text: str) -> bytes:
    """How protocol 2 pickles bytes: `_codecs.encode(text, "latin1")`."""
    return b"c_codecs\nencode\n" + uni(text) + uni("latin1") + b"\x86R"


def rekeyed(key_ops: bytes, member: str, *, state: object = None) -> bytes:
    """torch.save of `state` (default {"w": zeros(2)}: one 8-byte storage, key "0") with the
    key's opcodes in data.pkl replaced by `key_ops` and member data/0 renamed `data/<member>`."""
    saved = io.BytesIO()
    torch.save({"w": torch.zeros(2)} if state is None else state, saved)
    out = io.BytesIO()
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            prefix, name = info.filename.split("/", 1)
            body = src.read(info)
            if name == "data.pkl":
                assert body.count(SAVED_KEY) == 1
                body = body.replace(SAVED_KEY, key_ops)
            elif name == "data/0":
                name = f"data/{member}"
            dst.writestr(f"{prefix}/{name}", body)
    return out.getvalue()


def shared(first: bytes, second: bytes, *, member: str = "0", numel: int = 2) -> bytes:
    """{"a": zeros(2), "b": a[:1]}, two references to storage "0", with the key of the first
    replaced by `first` and the second reference's key (read from the memo by torch.save)
    replaced by `second` and its numel by `numel`."""
    base = torch.zeros(2)
    data = rekeyed(b"<FIRST>", member, state={"a": base, "b": base[:1]})
    archive = zipfile.ZipFile(io.BytesIO(data))
    pickled = next(name for name in archive.namelist() if name.endswith("data.pkl"))
    body = archive.read(pickled)
    key_put = body[body.index(b"<FIRST>") + 7 :][:2]  # BINPUT n after the key
    location_put = body[body.index(uni("cpu")) + 8 :][:2]
    old = b"h" + key_put[1:] + b"h" + location_put[1:] + b"K\x02t"
    assert body.count(old) == 1
    new = second + b"h" + location_put[1:] + b"K" + bytes([numel]) + b"t"
    body = body.replace(b"<FIRST>", first).replace(old, new)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name in archive.namelist():
            dst.writestr(name, body if name == pickled else archive.read(name))
    return out.getvalue()


LOADED_BY_TORCH = {
    "int_key": rekeyed(b"K\x00", "0"),
    "big_int_key": rekeyed(b"J\x40\xe2\x01\x00", "123456"),
    "bytes_key": rekeyed(as_bytes("0"), "b'0'"),
    "long_key": rekeyed(uni(LONG_KEY), LONG_KEY),
    "short_binstring_key": rekeyed(b"U\x010", "0"),
    "bool_key": rekeyed(b"\x88", "True"),
    "int_then_equal_bool": shared(b"K\x01", b"\x88", member="1"),  # True finds 1's storage
    "int_then_equal_bool_other_size": shared(b"K\x01", b"\x88", member="1", numel=1),
    "int_then_str_of_same_size": shared(b"K\x00", uni("0")),
}
REFUSED_BY_TORCH = {
    "int_key_member_missing": rekeyed(b"K\x00", "1"),
    "bytes_key_member_as_text": rekeyed(as_bytes("0"), "0"),
    "long_key_member_cut_to_80": rekeyed(uni(LONG_KEY), LONG_KEY[:80]),
    "long_key_member_one_longer": rekeyed(uni(LONG_KEY), LONG_KEY + "k"),
    "unhashable_key": rekeyed(b"]", "[]"),
    # 0 and "0" are two storages to torch: the second is read again, as 1 x 4 bytes
    "int_then_str_of_other_size": shared(b"K\x00", uni("0"), numel=1),
    "str_then_int_of_other_size": shared(uni("0"), b"K\x00", numel=1),
}


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    paths = {}
    for name, body in {**LOADED_BY_TORCH, **REFUSED_BY_TORCH}.items():
        paths[name] = folder / f"{name}.pt"
        paths[name].write_bytes(body)
    return paths, torch_verdicts(list(paths.values()))


@pytest.mark.parametrize("name", sorted(LOADED_BY_TORCH))
def test_a_storage_key_torch_loads_is_ok(crafted, name) -> None:
    paths, verdicts = crafted
    assert verdicts[str(paths[name])] is True, "the case must be one torch loads"
    report = audit_file(paths[name])
    assert report.loadable, report
    assert report.storages >= 1


@pytest.mark.parametrize("name", sorted(REFUSED_BY_TORCH))
def test_a_storage_key_torch_refuses_is_refused(crafted, name) -> None:
    paths, verdicts = crafted
    assert verdicts[str(paths[name])] is False, "the case must be one torch refuses"
    assert not audit_file(paths[name]).loadable


def legacy_bytes(state: object) -> bytes:
    saved = io.BytesIO()
    torch.save(state, saved, _use_new_zipfile_serialization=False)
    return saved.getvalue()


def with_header(data: bytes, magic_ops: bytes) -> bytes:
    """A legacy file whose magic-number pickle (PROTO 2, LONG1 magic, STOP: 15 bytes) is
    replaced by PROTO 2, the LONG1, `magic_ops`, STOP."""
    assert data[14:15] == b"."
    return data[:14] + magic_ops + data[14:]


LEGACY = legacy_bytes({"w": torch.zeros(2), "v": torch.ones(3, dtype=torch.int64)})
LEGACY_LOADED = {
    "magic_then_binput": with_header(LEGACY, b"q\x00"),
    "magic_then_long_binput": with_header(LEGACY, b"r\x07\x00\x00\x00"),
    "magic_put_get": with_header(LEGACY, b"q\x00h\x00"),  # STOP takes the top, the magic
    "int_below_the_magic": LEGACY[:2] + b"K\x01" + LEGACY[2:],  # STOP returns the top
}
LEGACY_REFUSED = {
    "magic_put_pop_get": with_header(LEGACY, b"q\x000h\x00"),  # POP: not in torch's unpickler
    "int_above_the_magic": with_header(LEGACY, b"K\x01"),
    "magic_then_memoize": with_header(LEGACY, b"\x94"),  # not in torch's unpickler
}


@pytest.fixture(scope="module")
def legacy_headers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("legacy")
    paths = {}
    for name, body in {**LEGACY_LOADED, **LEGACY_REFUSED}.items():
        paths[name] = folder / f"{name}.pt"
        paths[name].write_bytes(body)
    return paths, torch_verdicts(list(paths.values()))


@pytest.mark.parametrize("name", sorted(LEGACY_LOADED))
def test_a_legacy_header_torch_loads_is_ok(legacy_headers, name) -> None:
    paths, verdicts = legacy_headers
    assert verdicts[str(paths[name])] is True, "the case must be one torch loads"
    report = audit_file(paths[name])
    assert report.loadable and report.format == "legacy", report


@pytest.mark.parametrize("name", sorted(LEGACY_REFUSED))
def test_a_legacy_header_torch_refuses_is_refused(legacy_headers, name) -> None:
    paths, verdicts = legacy_headers
    assert verdicts[str(paths[name])] is False, "the case must be one torch refuses"
    assert not audit_file(paths[name]).loadable


def test_a_legacy_file_counts_its_storages_like_a_zip_file(tmp_path) -> None:
    state = {"w": torch.zeros(2), "v": torch.ones(3), "view": torch.zeros(4)[1:]}
    counts = {}
    for name, zipped in (("zip", True), ("legacy", False)):
        path = tmp_path / f"{name}.pt"
        torch.save(state, path, _use_new_zipfile_serialization=zipped)
        result = run_python(
            [sys.executable, "-m", "pytest_ckpt.cli", "audit", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"ok ({name}, " in result.stdout, result.stdout
        counts[name] = result.stdout.split(f"ok ({name}, ")[1].split(" storages")[0]
    assert counts == {"zip": "3", "legacy": "3"}


@pytest.mark.parametrize("body", [b"K\x01K\x02\xff", b"\x88\xff", b"q\x00\xff"])
def test_a_pickle_broken_after_its_first_values_is_one_line_not_a_traceback(tmp_path, body) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(body)
    result = run_python(
        [sys.executable, "-m", "pytest_ckpt.cli", "audit", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "not a checkpoint (neither a zip archive nor a pickle)" in result.stdout + result.stderr
