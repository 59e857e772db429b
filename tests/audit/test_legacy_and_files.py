"""The legacy format read as torch reads it (all five pickles, then the size records), and
files that are not what they seem: FIFOs, devices, odd names, bombs, big files. Each: the
verdict torch gives, or one line and exit 2; never a traceback, a hang or unbounded memory."""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import tracemalloc
import zipfile

import pytest
import torch

from pytest_ckpt.audit import audit_file
from tests.audit.conftest import torch_verdicts
from tests.forked_runs import run_python

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def legacy_bytes(state: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def pickle_ends(data: bytes, count: int) -> list[int]:
    """Offsets just after each of the first `count` pickles of a legacy file."""
    stream, ends = io.BytesIO(data), []
    for _ in range(count):
        pickle.load(stream)  # our own torch.save output, in the test: trusted
        ends.append(stream.tell())
    return ends


def cli(*args: str | bytes, timeout: float = 60) -> subprocess.CompletedProcess:
    return run_python(
        [sys.executable, "-m", "pytest_ckpt.cli", *args],
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def test_a_payload_in_sys_info_is_refused_and_never_run(tmp_path) -> None:
    marker = tmp_path / "pwned"
    data = legacy_bytes({"w": torch.zeros(2)})
    _, protocol_end, sys_info_end = pickle_ends(data, 3)
    payload = b"\x80\x02cposix\nsystem\nX" + struct.pack("<I", len(f"touch {marker}"))
    payload += f"touch {marker}".encode() + b"\x85R."
    path = tmp_path / "sys_info.pt"
    path.write_bytes(data[:protocol_end] + payload + data[sys_info_end:])
    report = audit_file(path)
    assert not report.loadable and not marker.exists()
    assert any(f.global_name == "posix.system" for f in report.findings), report.findings
    assert torch_verdicts([path]) == {str(path): False}
    assert not marker.exists()
    assert cli("audit", str(path)).returncode == 1


def test_legacy_files_torch_refuses_are_refused(tmp_path) -> None:
    cases = {}
    for dtype in (torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn):
        cases[str(dtype)] = legacy_bytes({"w": torch.zeros(3, dtype=dtype)})
    nested = torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)])
    cases["nested"] = legacy_bytes({"w": nested})
    data = legacy_bytes({"w": torch.zeros(2)})
    magic_end = pickle_ends(data, 1)[0]
    cases["protocol-1 magic"] = pickle.dumps(LEGACY_MAGIC, protocol=1) + data[magic_end:]
    paths = []
    for name, body in cases.items():
        paths.append(tmp_path / f"{name.replace(' ', '_')}.pt")
        paths[-1].write_bytes(body)
    assert set(torch_verdicts(paths).values()) == {False}
    for path in paths:
        report = audit_file(path)
        assert not report.loadable, (path.name, report)


def test_a_tar_and_legacy_polyglot_is_refused_like_a_tar(tmp_path) -> None:
    data = legacy_bytes({"w": torch.zeros(2)})
    protocol_end, sys_info_end = pickle_ends(data, 3)[1:]
    # sys_info is {key: 1} with a key that makes bytes 0-511 a valid tar header
    head = data[:protocol_end] + b"\x80\x02}X" + struct.pack("<I", 600)
    header = bytearray(tarfile.TarInfo("x" * 100).tobuf(tarfile.USTAR_FORMAT))
    header[: len(head)] = head
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    key = bytes(header[len(head) :]) + b"k" * (600 - (512 - len(head)))
    polyglot = bytes(header) + key[512 - len(head) :] + b"K\x01s." + data[sys_info_end:]
    path = tmp_path / "polyglot.pt"
    path.write_bytes(polyglot)
    assert tarfile.is_tarfile(path)
    assert torch_verdicts([path]) == {str(path): False}
    report = audit_file(path)
    assert not report.loadable and report.findings[0].kind == "legacy-tar"


def test_a_legacy_audit_never_reads_the_tensor_bytes(tmp_path) -> None:
    path = tmp_path / "big-legacy.pt"
    torch.save({"w": torch.zeros(16 << 20)}, path, _use_new_zipfile_serialization=False)  # 64MB
    tracemalloc.start()
    report = audit_file(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.loadable, report
    assert peak < 8 << 20, f"{peak} bytes allocated auditing a {path.stat().st_size}-byte file"


def test_a_state_built_many_times_is_linked_not_copied(tmp_path) -> None:
    from tests.audit.test_hostile import write_zip

    entries = b"".join(b"X\x05\x00\x00\x00k%04d]" % i for i in range(2000))
    state = b"}q\x00(" + entries + b"u"  # one dict of 2000 lists, memoised
    builds = b"h\x00b" * 5000  # BUILT onto the same OrderedDict 5000 times (torch: fine)
    payload = b"\x80\x02ccollections\nOrderedDict\n)R" + state + b"b" + builds + b"."
    path = write_zip(tmp_path / "builds.pt", payload)
    tracemalloc.start()
    report = audit_file(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.loadable == torch_verdicts([path])[str(path)] is True
    assert peak < 64 << 20, f"{peak} bytes for a {path.stat().st_size}-byte file"


def test_a_zip_bomb_data_pkl_is_not_inflated(tmp_path) -> None:
    """300 MiB of data.pkl deflated to a few hundred KB: refused on its declared size."""
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("bomb/data.pkl", "w", force_zip64=True) as member:
            chunk = b"\0" * (1 << 20)
            for _ in range(300):
                member.write(chunk)
        archive.writestr("bomb/version", b"3\n")
    assert path.stat().st_size < 2 << 20
    tracemalloc.start()
    report = audit_file(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.error is not None and "256 MiB" in report.error, report
    assert "\n" not in report.error and peak < 8 << 20


def test_fifos_and_devices_are_refused_by_audit_and_migrate(tmp_path) -> None:
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    for target in (fifo, "/dev/zero"):
        for args in (["audit", str(target)], ["migrate", str(target), str(tmp_path / "o.pt")]):
            for extra in ([], ["--trust"]) if args[0] == "migrate" else ([],):
                result = cli(*args, *extra, timeout=60)  # a hang fails here, a loop runs out
                err = result.stderr.decode()
                assert result.returncode == 2, (args, extra, err)
                assert "not a regular file" in err and "Traceback" not in err, err
                assert len(err.strip().splitlines()) == 1, err


def test_non_utf8_member_names_are_one_line_not_a_traceback(tmp_path) -> None:
    path = tmp_path / "names.pt"
    torch.save({"w": torch.zeros(2)}, path)
    raw = path.read_bytes().replace(b"names/byteorder", b"names/byteord\xff\xfe")
    path.write_bytes(raw)
    result = cli("audit", str(path))
    err = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in err and "UTF-8" in err, err
    assert torch_verdicts([path]) == {str(path): False}


def test_a_non_utf8_file_name_audits_like_any_other(tmp_path) -> None:
    name = os.fsencode(tmp_path) + b"/ckpt-\xff.pt"
    with open(name, "wb") as handle:
        torch.save({"w": torch.zeros(2)}, handle)
    assert audit_file(os.fsdecode(name)).loadable
    result = cli("audit", name)
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("where", ["cuda:0", "cuda:7"])
def test_cli_map_location_states_the_assumption(tmp_path, where) -> None:
    from tests.audit.test_hostile import write_zip
    from tests.audit.test_torch_checks import in_dict, tensor

    path = write_zip(tmp_path / "gpu.pt", in_dict(tensor(location=where)))
    assert cli("audit", str(path)).returncode == 1
    assert cli("audit", str(path), "--map-location", "cpu").returncode == 0
