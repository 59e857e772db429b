"""`pytest-ckpt diff A B` as a user runs it: exit status, the three outputs, refusals of
hostile files with a marker file proving nothing in them ran (those in a subprocess, the
rest through `main` in process: each subprocess pays torch's import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pytest_ckpt.cli import main
from tests.diff.files import write_safetensors
from tests.distributed.conftest import RunsCommand, read_metadata, write_metadata
from tests.forked_runs import run_python

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def diff_in_process(capsys, *args: object) -> subprocess.CompletedProcess[str]:
    code = main(["diff", *map(str, args)])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def run_diff(*args: object) -> subprocess.CompletedProcess[str]:
    return run_python(
        [sys.executable, "-m", "pytest_ckpt.cli", "diff", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    torch.save({"model": {"w": torch.zeros(4), "b": torch.ones(2)}, "step": 3}, tmp_path / "a.pt")
    torch.save(
        {"model": {"w": torch.tensor([0.0, 1e-3, 0.0, 0.0]), "c": torch.ones(2)}, "step": 4},
        tmp_path / "b.pt",
    )
    return tmp_path / "a.pt", tmp_path / "b.pt"


def test_equal_checkpoints_exit_0_and_different_ones_exit_1_with_what_changed(pair, capsys) -> None:
    a, b = pair
    same = diff_in_process(capsys, a, a)
    assert same.returncode == 0 and same.stdout.splitlines()[-1] == "equal: 3 keys"
    different = diff_in_process(capsys, a, b)
    assert different.returncode == 1 and different.stderr == ""
    assert different.stdout.splitlines()[1:] == [
        "  - model.b",
        "  + model.c",
        "  ~ model.w: 1/4 elements differ, max abs diff 0.001 (float32)",
        "  ~ step: value 3 -> 4",
        "different: 1 removed, 1 added, 2 changed of 2 keys in both",
    ]
    tolerant = diff_in_process(capsys, a, b, "--atol", "0.01")
    assert "model.w" not in tolerant.stdout and tolerant.returncode == 1


def test_json_and_markdown(pair, capsys) -> None:
    a, b = pair
    report = json.loads(diff_in_process(capsys, a, b, "--json").stdout)
    assert report["equal"] is False and report["removed"] == ["model.b"]
    w = next(c for c in report["changed"] if c["key"] == "model.w")
    assert (w["beyond"], w["elements"]) == (1, 4) and w["max_abs"] == pytest.approx(1e-3)
    markdown = diff_in_process(capsys, a, b, "--markdown").stdout.splitlines()
    assert "| key | change | detail |" in markdown
    assert "| model.b | removed |  |" in markdown


def test_a_hostile_file_is_refused_and_nothing_in_it_runs(tmp_path, pair) -> None:
    marker = tmp_path / "marker"
    torch.save({"w": RunsCommand(f"touch {marker}")}, tmp_path / "hostile.pt")
    result = run_diff(pair[0], tmp_path / "hostile.pt")
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "hostile.pt: refused" in line and "system" in line and "Traceback" not in line
    assert not marker.exists()


def test_a_dcp_folder_with_hostile_metadata_is_refused_and_nothing_runs(tmp_path) -> None:
    import torch.distributed.checkpoint as dcp

    marker = tmp_path / "marker"
    dcp.save({"w": torch.ones(3)}, checkpoint_id=tmp_path / "good")
    dcp.save({"w": torch.ones(3)}, checkpoint_id=tmp_path / "bad")
    assert main(["diff", str(tmp_path / "good"), str(tmp_path / "bad")]) == 0
    metadata = read_metadata(tmp_path / "bad")
    metadata.storage_meta.save_id = RunsCommand(f"touch {marker}")
    write_metadata(tmp_path / "bad", metadata)
    result = run_diff(tmp_path / "good", tmp_path / "bad")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "bad: refused" in result.stderr and "system" in result.stderr
    assert not marker.exists()


def test_unreadable_files_and_bad_arguments_exit_2_in_one_line(tmp_path, pair, capsys) -> None:
    (tmp_path / "cut.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b"{")
    for args in ((tmp_path / "missing.pt", pair[0]), (tmp_path / "cut.safetensors", pair[0])):
        result = diff_in_process(capsys, *args)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
        assert "Traceback" not in result.stderr
    with pytest.raises(SystemExit) as usage:
        main(["diff", str(pair[0]), str(pair[1]), "--rtol", "-1"])
    assert usage.value.code == 2 and "expected a number >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["fifo.pt", "fifo.safetensors", "m.safetensors.index.json"])
def test_a_fifo_or_a_device_is_refused_without_opening_it(tmp_path, pair, capsys, name) -> None:
    """Opening a FIFO blocks until a writer comes: diff would hang (it did, for A)."""
    fifo = tmp_path / name
    os.mkfifo(fifo)
    for args in ((fifo, pair[0]), (pair[0], fifo), ("/dev/zero", pair[0])):
        result = diff_in_process(capsys, *args)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
        assert "not a regular file" in result.stderr


def test_names_from_a_file_are_escaped(tmp_path, capsys) -> None:
    write_safetensors(tmp_path / "a.safetensors", {"w\x1b[31m\n": torch.ones(1)})
    write_safetensors(tmp_path / "b.safetensors", {"v": torch.ones(1)})
    for flag in ((), ("--markdown",)):
        result = diff_in_process(
            capsys, tmp_path / "a.safetensors", tmp_path / "b.safetensors", *flag
        )
        assert result.returncode == 1 and "\x1b" not in result.stdout
        assert "w\\x1b[31m\\n" in result.stdout.replace("\\\\", "\\")  # Markdown doubles \\
