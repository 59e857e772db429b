"""`pytest-ckpt migrate`: legacy objects become primitives statically, equal to what --trust
produces; hostile files are refused by path and nothing runs; IN is never overwritten."""

from __future__ import annotations

import struct

import torch

from pytest_ckpt.audit import audit_file
from pytest_ckpt.checks.compare import diff_values
from pytest_ckpt.cli import main
from tests.audit.test_hostile import PROTO2, global_op, write_zip
from tests.forked_runs import run_python
from tests.support.legacy_objects import legacy_state


def test_static_migration_converts_every_legacy_object_by_path(tmp_path, capsys) -> None:
    source, out = tmp_path / "legacy.pt", tmp_path / "out.pt"
    torch.save(legacy_state(), source)
    assert not audit_file(source).loadable
    assert main(["migrate", str(source), str(out)]) == 0
    printed = capsys.readouterr().out
    for line in (
        "converted root['seed_state'].stage: tests.support.legacy_objects.LegacyStage member "
        "-> its value 3",
        "converted root['seed_state'].stage_entered_at: datetime.datetime -> ISO string",
        "converted root['seed_state'].history: deque -> list",
        "converted root['blend']: tests.support.legacy_objects.LegacyBlend module "
        "-> state_dict + config",
        "converted root['day']: datetime.date -> ISO string",
    ):
        assert line in printed
    assert audit_file(out).loadable
    result = torch.load(out, weights_only=True)
    seed = result["seed_state"]
    assert seed["stage"] == 3 and seed["previous_stage"] == 0
    assert seed["stage_entered_at"] == "2026-03-01T12:30:05.000250+00:00"
    assert seed["history"] == [(0, "2026-03-01T12:30:05.000250+00:00")]
    assert result["blend"]["config"] == {"training": True, "steepness": 12.0}
    assert torch.equal(
        result["blend"]["state_dict"]["gate.weight"], legacy_state()["blend"].gate.weight
    )
    assert torch.equal(result["state_dict"]["w"], torch.arange(6.0).reshape(2, 3))


def test_static_output_equals_the_trusted_output(tmp_path, capsys) -> None:
    source = tmp_path / "legacy.pt"
    torch.save(legacy_state(), source)
    assert main(["migrate", str(source), str(tmp_path / "static.pt")]) == 0
    assert main(["migrate", str(source), str(tmp_path / "trusted.pt"), "--trust"]) == 0
    assert "RUNS CODE FROM THE FILE" in capsys.readouterr().err
    static = torch.load(tmp_path / "static.pt", weights_only=True)
    trusted = torch.load(tmp_path / "trusted.pt", weights_only=True)
    assert diff_values(static, trusted) == []


def test_a_hostile_file_is_refused_by_path_and_nothing_runs(tmp_path, capsys) -> None:
    marker = tmp_path / "pwned"
    command = f"touch {marker}".encode()
    payload = PROTO2 + b"}X\x01\x00\x00\x00x" + global_op("os", "system")
    payload += b"X" + struct.pack("<I", len(command)) + command + b"\x85Rs."  # {'x': os.system(..)}
    source, out = write_zip(tmp_path / "evil.pt", payload), tmp_path / "out.pt"
    assert main(["migrate", str(source), str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{source}: refused; {out} not written:" in err
    assert "root['x']: os.system is called when unpickling: refusing to convert" in err
    assert not out.exists() and not marker.exists()


def test_input_is_never_overwritten_and_bad_input_exits_2(tmp_path, capsys) -> None:
    source = tmp_path / "legacy.pt"
    torch.save(legacy_state(), source)
    before = source.read_bytes()
    assert main(["migrate", str(source), str(source)]) == 2
    assert source.read_bytes() == before
    assert "refusing to overwrite the input" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04junk")
    assert main(["migrate", str(tmp_path / "junk.pt"), str(tmp_path / "o.pt")]) == 2
    assert not (tmp_path / "o.pt").exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_reference_v0_files_come_out_in_the_current_format(tmp_path, capsys) -> None:
    from pathlib import Path

    from pytest_ckpt.reference import MorphogeneticModel

    fixtures = Path(__file__).resolve().parents[2] / "fixtures"
    source = fixtures / "v0" / "legacy-cnn-1x1-blending.pt"
    out = tmp_path / "v1.pt"
    assert main(["migrate", str(source), str(out), "--reference-v0"]) == 0
    assert "root: schema 0 reference checkpoint -> schema 1" in capsys.readouterr().out
    expected = torch.load(fixtures / "v1" / "model-cnn-1x1-blending.pt", weights_only=True)
    migrated = torch.load(out, weights_only=True)
    assert diff_values(expected, migrated) == []
    MorphogeneticModel.from_checkpoint(migrated)
    legacy = tmp_path / "legacy.pt"
    torch.save(legacy_state(), legacy)
    assert main(["migrate", str(legacy), str(tmp_path / "x.pt"), "--reference-v0"]) == 1
    assert not (tmp_path / "x.pt").exists()


def test_a_hostile_file_name_is_printed_escaped(tmp_path) -> None:
    """A file name is data: an escape sequence or newline in it never reaches the terminal."""
    import sys

    src = tmp_path / "evil\x1b[2J\nok.pt"
    src.write_bytes(b"not a checkpoint")
    out = tmp_path / "out\x1b[31m.pt"
    result = run_python(
        [sys.executable, "-m", "pytest_ckpt.cli", "migrate", str(src), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "\x1b" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert "evil\\x1b[2J\\nok.pt" in result.stderr
