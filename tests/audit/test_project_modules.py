"""Issue 19: the console script tells a global apart from the project the user runs it in.

`pytest-ckpt` is a console script, so `sys.path[0]` is its own folder, not the working
directory: run from the folder holding the module that defines `SeedStage`, the auditor used
to say it "cannot tell" and migrate refused. Both now read module sources (never importing
them) from the working directory and `sys.path`, and from each `--path DIR`. Run as users
run it: the installed console script, in a subprocess, from a project folder.
"""

from __future__ import annotations

import fractions
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pytest_ckpt.cli import main
from tests.audit.test_hostile import PROTO2, global_op, write_zip

SUPPORT = Path(__file__).resolve().parents[1] / "support" / "seed_slot_state.py"
MODULE = "myproject_state"
STAGE = f"{MODULE}.SeedStage"


def _script() -> str:
    script = shutil.which("pytest-ckpt", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.fail(f"pytest-ckpt is not installed beside {sys.executable}: pip install -e .")
    return script


def run_cli(*args: str, cwd: Path, pythonpath: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run(
        [_script(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A user's project folder: their module (a copy of the seed slot state) and a
    checkpoint saved from it, at GERMINATED."""
    folder = tmp_path_factory.mktemp("project")
    shutil.copy(SUPPORT, folder / f"{MODULE}.py")
    spec = importlib.util.spec_from_file_location(MODULE, folder / f"{MODULE}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module  # pickle finds the classes by their module's name
    try:
        spec.loader.exec_module(module)
        torch.save(module.checkpoint_at(module.SeedStage.GERMINATED), folder / "seed.pt")
    finally:
        del sys.modules[MODULE]
    return folder


def _stage_finding(stdout: str) -> dict:
    (report,) = json.loads(stdout)["files"]
    return next(f for f in report["findings"] if f["global_name"] == STAGE)


def test_run_from_the_project_folder_the_auditor_calls_the_enum_an_enum_and_offers_it(
    project,
) -> None:
    result = run_cli("audit", "seed.pt", "--json", cwd=project)
    assert result.returncode == 1, result.stderr
    finding = _stage_finding(result.stdout)
    assert finding["needs"] == [STAGE]
    assert "looks like an Enum member" in finding["fix"] and "cannot tell" not in finding["fix"]


def test_run_from_the_project_folder_migrate_converts_the_enum(project) -> None:
    result = run_cli("migrate", "seed.pt", "migrated.pt", "--force", cwd=project)
    assert result.returncode == 0, result.stderr
    assert f"{STAGE} member -> its value 1" in result.stdout
    state = torch.load(project / "migrated.pt", weights_only=True)  # primitives: safe to load
    seed = state["state_dict"]["seed_slots.r0c0._extra_state"]["seed_state"]
    assert (seed["stage"], seed["previous_stage"]) == (1, 0)


def test_path_names_the_project_from_anywhere_else(project, tmp_path, monkeypatch, capsys):
    source = str(project / "seed.pt")
    monkeypatch.chdir(tmp_path)  # not searched, not on sys.path: the auditor cannot tell
    assert main(["audit", source, "--json"]) == 1
    assert "cannot tell" in _stage_finding(capsys.readouterr().out)["fix"]
    with pytest.raises(SystemExit) as usage:
        main(["migrate", source, "out.pt", "--path", str(tmp_path / "nope")])
    assert usage.value.code == 2 and "is not a folder" in capsys.readouterr().err
    audited = run_cli("audit", source, "--json", "--path", str(project), cwd=tmp_path)
    assert _stage_finding(audited.stdout)["needs"] == [STAGE]
    migrated = run_cli("migrate", source, "out.pt", "--path", str(project), cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert f"{STAGE} member -> its value 1" in migrated.stdout


def test_a_standard_library_global_does_not_depend_on_pythonpath_or_the_folder(
    project, tmp_path
) -> None:
    """`pathlib.PosixPath` (and 3.13's `pathlib._local.PosixPath`), `fractions.Fraction` (a
    module the auditor does not import) are the interpreter's: a stray `pathlib` package or
    `fractions.py` in the working directory never answers for them, nor does PYTHONPATH."""
    paths = tmp_path / "paths.pt"
    torch.save({"p": Path("/runs/a"), "f": fractions.Fraction(1, 3)}, paths)
    local = PROTO2 + b"}X\x01\x00\x00\x00p" + global_op("pathlib._local", "PosixPath")
    local = write_zip(tmp_path / "local.pt", local + b"X\x01\x00\x00\x00/\x85Rs.")
    stray = tmp_path / "stray"
    (stray / "pathlib").mkdir(parents=True)
    for module in ("pathlib/__init__.py", "pathlib/_local.py", "fractions.py"):
        (stray / module).write_text("def PosixPath(*parts):\n    pass\nFraction = PosixPath\n")
    clean = run_cli("audit", str(paths), str(local), "--json", cwd=tmp_path)
    shadowed = run_cli(
        "audit", str(paths), str(local), "--json", cwd=stray, pythonpath=str(project)
    )
    assert clean.returncode == shadowed.returncode == 1, (clean.stderr, shadowed.stderr)
    assert json.loads(clean.stdout) == json.loads(shadowed.stdout)
    path, fraction = json.loads(clean.stdout)["files"][0]["findings"]
    assert path["needs"] == [path["global_name"]]  # a class: offered
    assert fraction["global_name"] == "fractions.Fraction" and "function" not in fraction["fix"]
