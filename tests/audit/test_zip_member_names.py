"""Zip archives with two members of one name are refused: which copy a reader gets is the
reader's choice (Python's `zipfile`, and so SB3's `archive.read("data")`, takes the last;
torch's reader finds one by a binary search over the sorted names), so no single verdict
holds for the file. Each case is held against the real loaders in a subprocess, with a
marker file that shows what running the other copy does; nothing is unpickled here."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from pytest_ckpt.audit import audit_file
from pytest_ckpt.audit.formats import torch_archive as archive
from pytest_ckpt.cli import main
from tests.audit.test_sb3_zip import RunsACommand, sb3_zip, serialized

# What SB3's load_from_zip_file (stable_baselines3/common/save_util.py) does with a zip, or
# the function itself where stable-baselines3 is installed: read "data" through zipfile,
# cloudpickle.loads (pickle-compatible) each top-level ":serialized:" value, then th.load
# every member whose extension is .pth, sub-folders included. Run only on crafted files.
SB3_LOAD = """
import base64, importlib.util, io, json, os, pickle, sys, warnings, zipfile
import torch
warnings.simplefilter("ignore")
path = sys.argv[1]
if importlib.util.find_spec("stable_baselines3") is not None:
    from stable_baselines3.common.save_util import load_from_zip_file
    try:
        load_from_zip_file(path, device="cpu")
        print(json.dumps("loaded"))
    except Exception as err:
        print(json.dumps(type(err).__name__))
    sys.exit(0)
with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    if "data" in names:
        for item in json.loads(archive.read("data").decode()).values():
            if isinstance(item, dict) and ":serialized:" in item:
                pickle.loads(base64.b64decode(item[":serialized:"].encode()))
    try:
        for name in names:
            if os.path.splitext(name)[1] == ".pth":
                torch.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)
    except Exception as err:
        print(json.dumps(type(err).__name__))
        sys.exit(0)
print(json.dumps("loaded"))
"""

# torch.load(weights_only=True) of the file, then Python's zipfile reading the same member
# name and unpickling it (what a tool built on zipfile would load).
TORCH_AND_ZIPFILE = """
import json, pickle, sys, warnings, zipfile
import torch
warnings.simplefilter("ignore")
path, member = sys.argv[1], sys.argv[2]
try:
    torch_says = repr(torch.load(path, weights_only=True))
except Exception as err:
    torch_says = type(err).__name__
pickle.loads(zipfile.ZipFile(path).read(member))
print(json.dumps(torch_says))
"""


def run(script: str, *args: object) -> str:
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def cli_audit(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`pytest-ckpt audit PATH`: (exit status, stdout, stderr)."""
    status = main(["audit", str(path)])
    out, err = capsys.readouterr()
    return status, out, err


def with_second_copy(path: Path, member: str, before: str, content: bytes) -> Path:
    """`path` (a zip) rewritten with a second member named `member`, holding `content`,
    written just before the member named `before` (after the first copy)."""
    with zipfile.ZipFile(path) as source:
        members = [(info.filename, source.read(info)) for info in source.infolist()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns "Duplicate name": that is the point
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members:
                if name == before:
                    archive.writestr(member, content)
                archive.writestr(name, data)
    return path


def test_an_sb3_zip_with_two_data_members_is_refused_where_sb3_s_load_runs_the_last(
    tmp_path, capsys
) -> None:
    marker = tmp_path / "ran"
    path = sb3_zip(tmp_path / "ppo.zip", {"gamma": 0.99}, {"policy.pth": {"w": torch.ones(2)}})
    hostile = json.dumps({"gamma": serialized(RunsACommand(f"touch {marker}"))}).encode()
    with_second_copy(path, "data", "policy.pth", hostile)

    status, out, err = cli_audit(path, capsys)
    assert not marker.exists()
    assert status == 2, out
    (line,) = err.splitlines()
    assert line.startswith(f"pytest-ckpt audit: {path}: zip member 'data' appears 2 times")
    assert "reads the last copy" in line and "fix:" in line
    assert ": ok" not in out

    run(SB3_LOAD, path)
    assert marker.exists()  # what the refused file does to whoever loads it with SB3


def test_a_duplicated_pth_member_of_an_sb3_zip_is_refused(tmp_path, capsys) -> None:
    path = sb3_zip(tmp_path / "ppo.zip", {"gamma": 0.99}, {"policy.pth": {"w": torch.ones(2)}})
    other = tmp_path / "other.pth"
    torch.save({"when": __import__("datetime").date(2026, 1, 1)}, other)
    with_second_copy(path, "policy.pth", "_stable_baselines3_version", other.read_bytes())
    assert run(SB3_LOAD, path) == "UnpicklingError"  # SB3 reads the last copy only
    status, _, err = cli_audit(path, capsys)
    assert status == 2
    assert "zip member 'policy.pth' appears 2 times" in err


def test_a_torch_zip_with_two_data_pkl_members_is_refused(tmp_path, capsys) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, path)
    hostile = __import__("pickle").dumps({"x": RunsACommand(f"touch {marker}")}, protocol=2)
    # Placed here, torch 2.13's reader finds the first copy and Python's zipfile the last.
    with_second_copy(path, "model/data.pkl", "model/version", hostile)
    assert audit_file(path).error is not None

    status, out, err = cli_audit(path, capsys)
    assert not marker.exists()
    assert status == 2, out
    (line,) = err.splitlines()
    assert line.startswith(f"pytest-ckpt audit: {path}: zip member 'data.pkl' appears 2 times")
    assert "fix:" in line

    torch_says = run(TORCH_AND_ZIPFILE, path, "model/data.pkl")
    assert marker.exists()  # zipfile's copy runs code ...
    assert torch_says == "{'w': tensor([0., 0.])}"  # ... while torch.load saw the harmless one


@pytest.mark.parametrize("reader", ["torch", "zipfile"])
@pytest.mark.parametrize("member", ["model/data.pkl", "model/data/0", "model/byteorder"])
def test_any_duplicated_record_of_a_torch_zip_is_refused(
    tmp_path, monkeypatch, member, reader
) -> None:
    """By torch's archive reader, and by the zipfile reader used where torch lacks one."""
    if reader == "zipfile":
        monkeypatch.setattr(archive, "_open_zip", archive._open_zip_with_zipfile)
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with zipfile.ZipFile(path) as saved:
        copy = saved.read(member)
    with_second_copy(path, member, "model/version", copy)
    report = audit_file(path)
    assert report.error is not None
    assert f"zip member {member.removeprefix('model/')!r} appears 2 times" in report.error
