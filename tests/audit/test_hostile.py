"""Hostile files: nothing runs, nothing blows up, every verdict is torch's."""

from __future__ import annotations

import pickle
import re
import resource
import struct
import subprocess
import sys
import time
import zipfile

import pytest
import torch

from pytest_ckpt.audit import audit_file
from tests.audit.conftest import torch_verdicts

PROTO2 = b"\x80\x02"


def write_zip(path, data_pkl: bytes, *, extra: dict[str, bytes] | None = None, prefix="archive"):
    """A torch-style archive whose data.pkl is `data_pkl` (other members from a real save)."""
    template = path.with_suffix(".template")
    torch.save({"w": torch.zeros(2)}, template)
    with zipfile.ZipFile(template) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            name = info.filename.split("/", 1)[1]
            body = data_pkl if name == "data.pkl" else src.read(info)
            dst.writestr(f"{prefix}/{name}", body)
        for name, body in (extra or {}).items():
            dst.writestr(name, body)
    return path


def global_op(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def test_a_reduce_of_os_system_is_refused_and_never_run(tmp_path) -> None:
    marker = tmp_path / "pwned"
    payload = PROTO2 + global_op("os", "system") + b"X" + struct.pack("<I", len(f"touch {marker}"))
    payload += f"touch {marker}".encode() + b"\x85R0N."  # TUPLE1 REDUCE POP NONE STOP
    path = write_zip(tmp_path / "evil.pt", payload)
    report = audit_file(path)
    assert not report.loadable and not marker.exists()
    kinds = {f.kind: f for f in report.findings}
    assert set(kinds) == {"unsupported-global", "unsupported-opcode"}  # and POP is refused
    finding = kinds["unsupported-global"]
    assert finding.global_name == "os.system" and "blocked" in finding.detail
    assert finding.path.startswith("<an object built at offset 2 and dropped")
    assert "never load this file with the unsafe (non-weights_only) loader" in finding.fix
    assert not finding.allowlist_helps
    assert torch_verdicts([path]) == {str(path): False}
    assert not marker.exists()


def test_deep_nesting_needs_no_recursion(tmp_path) -> None:
    depth = 200_000
    payload = PROTO2 + b"]" * depth + b"a" * (depth - 1) + b"."  # nested empty lists
    report = audit_file(write_zip(tmp_path / "deep.pt", payload))
    assert report.loadable


def test_memo_fan_out_stays_linear(tmp_path) -> None:
    # One dict, referenced 300k times through the memo: no copies, no blow-up.
    payload = PROTO2 + b"}q\x00" + b"]" + b"(" + b"h\x00" * 300_000 + b"e" + b"\x86."
    start = time.perf_counter()
    report = audit_file(write_zip(tmp_path / "fan.pt", payload))
    assert report.loadable and time.perf_counter() - start < 10


@pytest.mark.parametrize(
    "payload",
    [
        PROTO2 + b"X" + struct.pack("<I", 2**31) + b"abc.",  # BINUNICODE claiming 2 GiB
        PROTO2 + b"\x8e" + struct.pack("<Q", 2**62) + b".",  # BINBYTES8 claiming 4 EiB
    ],
)
def test_huge_declared_sizes_are_not_allocated(tmp_path, payload) -> None:
    report = audit_file(write_zip(tmp_path / "huge.pt", payload))
    assert report.error is not None and "declares" in report.error


def test_huge_storage_claims_are_checked_against_the_archive(tmp_path) -> None:
    path = tmp_path / "ok.pt"
    torch.save({"w": torch.zeros(2)}, path)
    data = zipfile.ZipFile(path).read("ok/data.pkl")
    lied = data.replace(b"K\x02", b"J" + struct.pack("<i", 2**30), 1)  # numel 2 -> 2**30
    assert lied != data
    report = audit_file(write_zip(tmp_path / "lie.pt", lied))
    assert [f.kind for f in report.findings] == ["bad-persistent-id"]
    assert "declares 1073741824 x 4 bytes but the archive holds 8" in report.findings[0].detail


def test_a_nested_pickle_in_bytes_is_data_not_code(tmp_path) -> None:
    inner = pickle.dumps(print)  # a pickle that would import builtins.print
    path = tmp_path / "nested.pt"
    torch.save({"blob": inner}, path)
    assert audit_file(path).loadable == torch_verdicts([path])[str(path)] is True


def test_extra_members_match_torch(tmp_path) -> None:
    inside, outside = tmp_path / "inside.pt", tmp_path / "outside.pt"
    for path, member in ((inside, "inside/evil.pkl"), (outside, "zzz/evil.pkl")):
        torch.save({"w": torch.zeros(2)}, path)
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(member, pickle.dumps(print))
    torch_says = torch_verdicts([inside, outside])
    report = audit_file(inside)
    assert report.loadable is torch_says[str(inside)] is True
    assert report.notes == ("1 member(s) of the archive folder torch.load does not read: evil.pkl",)
    report = audit_file(outside)
    assert torch_says[str(outside)] is False
    assert report.error is not None and "\n" not in report.error
    assert "zzz/evil.pkl" in report.error and "outside/" in report.error


def test_mixed_prefixes_and_crc_damage_match_torch(tmp_path) -> None:
    mixed = tmp_path / "mixed.pt"
    torch.save({"w": torch.zeros(2)}, mixed)
    with zipfile.ZipFile(mixed) as src, zipfile.ZipFile(tmp_path / "m2.pt", "w") as dst:
        dst.writestr("other/readme", b"x")  # first member decides torch's archive name
        for info in src.infolist():
            dst.writestr(info, src.read(info))
    crc = tmp_path / "crc.pt"
    torch.save({"w": torch.arange(4.0)}, crc)
    raw = bytearray(crc.read_bytes())
    start = raw.find(b"\x80\x02")  # data.pkl is stored uncompressed: flip one of its bytes
    raw[start + 5] ^= 0x01
    crc.write_bytes(bytes(raw))
    files = [tmp_path / "m2.pt", crc]
    torch_says = torch_verdicts(files)
    for f in files:
        assert audit_file(f).loadable == torch_says[str(f)], f


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archives_are_reported_as_such(tmp_path) -> None:
    path = tmp_path / "script.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    report = audit_file(path)
    assert report.format == "torchscript" and [f.kind for f in report.findings] == ["torchscript"]
    assert torch_verdicts([path])[str(path)] is False


def test_a_raw_pickle_is_not_a_checkpoint_for_torch(tmp_path) -> None:
    path = tmp_path / "raw.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    report = audit_file(path)
    assert report.format == "raw-pickle" and report.findings[0].kind == "format"
    assert torch_verdicts([path])[str(path)] is False


@pytest.mark.parametrize(
    "text_op",
    [
        b"X" + struct.pack("<I", 2) + b"\xff\xfe",  # BINUNICODE, short
        b"X" + struct.pack("<I", 1001) + b"a" * 1000 + b"\xff",  # long: bad byte past preview
        b"U\x02\xff\xfe",  # SHORT_BINSTRING: torch decodes it with its default UTF-8
    ],
    ids=["short", "long", "short-binstring"],
)
def test_text_that_is_not_utf8_is_a_corrupt_pickle_not_a_crash(tmp_path, text_op) -> None:
    path = write_zip(tmp_path / "text.pt", PROTO2 + text_op + b".")
    report = audit_file(path)
    assert report.error is not None and "not valid UTF-8" in report.error
    assert torch_verdicts([path]) == {str(path): False}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_zipfile_reads_archives_where_torchs_reader_cannot_list_sizes(tmp_path, monkeypatch):
    """torch builds whose archive reader lacks get_record_size get the zipfile reader: the
    same pickle, sizes, notes and refusals (and, stricter than torch, CRC checks)."""
    from pytest_ckpt.audit.formats import torch_archive as archive

    clean, outside, script = tmp_path / "clean.pt", tmp_path / "outside.pt", tmp_path / "s.pt"
    torch.save({"w": torch.zeros(2), "v": torch.ones(3)}, clean)
    torch.save({"w": torch.zeros(2)}, outside)
    with zipfile.ZipFile(clean, "a") as archive_file:
        archive_file.writestr("clean/extra.txt", b"x")
    with zipfile.ZipFile(outside, "a") as archive_file:
        archive_file.writestr("zzz/evil.pkl", b"x")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), script)
    with_torch = {p: archive.open_checkpoint(p) for p in (clean, script)}
    monkeypatch.setattr(archive, "_open_zip", archive._open_zip_with_zipfile)
    for path, expected in with_torch.items():
        assert archive.open_checkpoint(path) == expected
    with pytest.raises(archive.Unreadable, match="zzz/evil.pkl"):
        archive.open_checkpoint(outside)


def test_a_stack_global_on_non_strings_is_reported_without_memory_addresses(tmp_path) -> None:
    payload = PROTO2 + b")" + b"X\x01\x00\x00\x00f" + b"\x93" + b"."  # (), 'f', STACK_GLOBAL
    report = audit_file(write_zip(tmp_path / "stack.pt", payload))
    names = {f.global_name for f in report.findings}
    assert "<builtins.tuple>.f" in names
    assert not any("object at 0x" in f.detail for f in report.findings)


# A BUILD whose state holds (or is) the instance it builds: torch refuses BUILD on a tuple or
# a list; the auditor must say so, not loop while linking the state to itself.
SELF_BUILDS = {
    "a tuple built with itself": b"(]t2b.",  # MARK EMPTY_LIST TUPLE DUP BUILD
    "a list built with a tuple of itself": b"]q\x00(h\x00tb.",  # BINPUT 0; (GET 0,); BUILD
    "a tuple built with a tuple of itself": b"(]tq\x00(h\x00tb.",
}


def capped_cli(*paths, timeout: float = 60) -> subprocess.CompletedProcess:
    """The CLI on `paths` in a subprocess whose address space is capped (3 GB, torch maps
    ~0.7): a regression that grows memory without end fails here, not on the machine."""
    cap = 3 << 30

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    command = [sys.executable, "-m", "pytest_ckpt.cli", "audit", *map(str, paths)]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, preexec_fn=limit
    )


def test_a_build_whose_state_is_its_own_instance_ends(tmp_path) -> None:
    paths = [
        write_zip(tmp_path / f"self{i}.pt", PROTO2 + payload)
        for i, payload in enumerate(SELF_BUILDS.values())
    ]
    result = capped_cli(*paths)  # one process for all: each file's report, then the next
    assert result.returncode == 1, result.stderr[-2000:]  # findings, not a crash
    assert "Traceback" not in result.stderr
    for path in paths:
        assert re.search(rf"^{re.escape(str(path))}: \d+ finding\(s\)", result.stdout, re.M)
    assert result.stdout.count("BUILD (setting object state) on builtins.") == len(paths)
    assert torch_verdicts(paths) == {str(path): False for path in paths}
