"""An SB3 `model.save` zip (built here by hand, as SB3's save_to_zip_file writes it;
stable-baselines3 is not installed): its .pth members are audited as torch.save files,
held against torch.load(weights_only=True), and each cloudpickled entry of its `data`
member that can import something is a finding. Nothing is ever unpickled."""

from __future__ import annotations

import base64
import datetime
import json
import operator
import os
import pickle
import sys
import zipfile
from pathlib import Path

import torch

from pytest_ckpt.audit.allowlist import load_allowlist
from pytest_ckpt.audit.formats.sb3_zip import audit_sb3_zip, is_sb3_zip
from pytest_ckpt.cli import main
from tests.audit.conftest import torch_verdicts
from tests.forked_runs import run_python


def constant_schedule(progress: float) -> float:
    """What SB3 stores as lr_schedule (cloudpickle pickles importable functions by name)."""
    return 3e-4


class RunsACommand:
    """A hostile entry: unpickling it runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def serialized(value: object) -> dict[str, str]:
    return {
        ":type:": str(type(value)),
        ":serialized:": base64.b64encode(pickle.dumps(value, protocol=5)).decode(),
    }


def sb3_zip(path: Path, data: dict | bytes | None, pth: dict[str, object]) -> Path:
    """A zip laid out as SB3's save_to_zip_file writes it."""
    with zipfile.ZipFile(path, "w") as archive:
        if data is not None:
            archive.writestr("data", data if isinstance(data, bytes) else json.dumps(data))
        for name, value in pth.items():
            with archive.open(name, mode="w", force_zip64=True) as handle:
                if isinstance(value, bytes):
                    handle.write(value)
                else:
                    torch.save(value, handle)
        archive.writestr("_stable_baselines3_version", "2.3.0")
        archive.writestr("system_info.txt", "- OS: hand-written for a test")
    return path


def ppo_like(path: Path, marker: Path) -> Path:
    data = {
        "gamma": 0.99,
        "n_steps": 2048,
        "policy_kwargs": {"nested": serialized(operator.mul)},  # SB3 unpickles top level only
        "lr_schedule": serialized(constant_schedule),
        "clip_range": serialized(operator.itemgetter(0)),
        "hostile": serialized(RunsACommand(f"touch {marker}")),
        "_last_obs": serialized([0.5, 1.5]),
    }
    return sb3_zip(
        path,
        data,
        {
            "policy.pth": {"mlp.weight": torch.zeros(2, 2)},
            "policy.optimizer.pth": {"when": datetime.date(2026, 1, 1), "state": {}},
            "pytorch_variables.pth": {},
        },
    )


def test_cloudpickled_entries_and_pth_members_are_audited_without_unpickling(
    tmp_path, capsys
) -> None:
    marker = tmp_path / "was-unpickled"
    path = ppo_like(tmp_path / "ppo.zip", marker)
    status = main(["audit", str(path)])
    out = capsys.readouterr().out
    assert status == 1
    assert not marker.exists()
    assert f"{path}: 4 finding(s) (sb3-zip)" in out
    assert "data['lr_schedule']: a cloudpickled value" in out
    assert "whatever weights_only says; it imports or calls 'tests.audit.test_sb3_zip." in out
    assert "data['hostile']: " in out and "'posix.system'" in out
    assert "data['clip_range']: " in out and "'operator.itemgetter'" in out
    assert "custom_objects=" in out  # the fix SB3 offers
    assert "'policy.optimizer.pth':root['when']: unsupported global datetime.date" in out
    assert "note: 1 cloudpickled entr(ies) of primitives only" in out
    assert "policy_kwargs" not in out and "'policy.pth'" not in out


def test_pth_member_verdicts_agree_with_torch_load(tmp_path) -> None:
    path = ppo_like(tmp_path / "ppo.zip", tmp_path / "marker")
    report = audit_sb3_zip(path, load_allowlist())
    members = {}
    with zipfile.ZipFile(path) as archive:
        for name in ("policy.pth", "policy.optimizer.pth", "pytorch_variables.pth"):
            members[name] = tmp_path / name
            members[name].write_bytes(archive.read(name))
    torch_says = torch_verdicts(list(members.values()))
    for name, extracted in members.items():
        ours = not any(f.path.startswith(f"{name!r}:") for f in report.findings)
        assert ours == torch_says[str(extracted)], name


def test_an_sb3_zip_of_tensors_and_plain_data_is_ok(tmp_path, capsys) -> None:
    path = sb3_zip(
        tmp_path / "clean.zip",
        {"gamma": 0.99, "_last_obs": serialized([1.0])},
        {"policy.pth": {"w": torch.ones(3)}, "pytorch_variables.pth": {}},
    )
    assert is_sb3_zip(path)
    assert main(["audit", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: ok (sb3-zip, 2 .pth member(s), 1 storages" in out


def test_a_torch_save_archive_is_not_taken_for_an_sb3_zip(tmp_path) -> None:
    path = tmp_path / "model.zip"
    torch.save({"w": torch.zeros(1)}, path)
    assert not is_sb3_zip(path)


def test_corrupt_sb3_zips_are_unreadable_in_one_line_never_a_traceback(tmp_path) -> None:
    good_pth = tmp_path / "p.pth"
    torch.save({"w": torch.zeros(4)}, good_pth)
    cases = [
        sb3_zip(tmp_path / "not-json.zip", b"{not json", {}),
        sb3_zip(tmp_path / "not-base64.zip", {"x": {":serialized:": "a"}}, {}),
        sb3_zip(tmp_path / "array.zip", b"[1, 2]", {}),
        sb3_zip(tmp_path / "cut.zip", {}, {"policy.pth": good_pth.read_bytes()[:-40]}),
        sb3_zip(tmp_path / "empty-member.zip", None, {"policy.pth": b""}),
    ]
    result = run_python(
        [sys.executable, "-m", "pytest_ckpt.cli", "audit", *map(str, cases)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == len(cases)
    assert "not JSON" in lines[0] and "not base64" in lines[1] and "not a JSON object" in lines[2]
    assert "'policy.pth'" in lines[3] and "'policy.pth'" in lines[4]


def test_names_from_the_zip_are_escaped(tmp_path, capsys) -> None:
    path = sb3_zip(
        tmp_path / "names.zip",
        {"key\n\x1b[2Jfake": serialized(operator.add)},
        {"evil\x1b].pth": {"when": datetime.date(2026, 1, 1)}},
    )
    assert main(["audit", str(path)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "data['key\\n\\x1b[2Jfake']" in out
    assert "'evil\\x1b].pth':root['when']" in out


def test_pth_members_in_sub_folders_are_audited_as_sb3_loads_every_pth(tmp_path) -> None:
    """SB3 th.loads each member whose extension is .pth, wherever it sits in the zip."""
    marker = tmp_path / "ran"
    path = sb3_zip(
        tmp_path / "ppo.zip",
        {"gamma": 0.99},
        {
            "policy.pth": {"w": torch.ones(2)},
            "sub/x.pth": {"h": RunsACommand(f"touch {marker}")},
            "sub/deeper/when.pth": {"when": datetime.date(2026, 1, 1)},
            "sub/notes.pth.txt": b"not read by SB3",
        },
    )
    report = audit_sb3_zip(path, load_allowlist())
    assert not marker.exists()
    assert [f.path for f in report.findings] == [
        "'sub/x.pth':root['h']",
        "'sub/deeper/when.pth':root['when']",
    ]
    assert report.summary.startswith("3 .pth member(s)")
    with zipfile.ZipFile(path) as archive:
        extracted = {}
        for name in ("sub/x.pth", "sub/deeper/when.pth"):
            extracted[name] = tmp_path / name.replace("/", "_")
            extracted[name].write_bytes(archive.read(name))
    assert not any(torch_verdicts(list(extracted.values())).values())  # torch refuses both
    assert not marker.exists()
