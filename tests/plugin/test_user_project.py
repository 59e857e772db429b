"""A user's project as the issue's testers wrote one: a plain model with its own phase names,
named in the ini by its class, the report written outside the project, and their own tests
using the fixtures. One run of it (a few seconds), read by each test below; plus the two runs
that must stop with a usage error.

Subprocess runs (not pytester's) so that one run serves a module: each costs a torch import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

USER_SUBJECT = '''
import torch

from pytest_ckpt import ModuleSubject


def net():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def batch(g):
    return torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)


class PhasedSubject(ModuleSubject):
    """A subject class with its name at class level, named in the ini as the class."""

    name = "phased"

    def __init__(self):
        super().__init__(
            net,
            make_batch=batch,
            make_schedulers=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2),
            stages={"WARMUP": 1, "DECAY": 4},
            name=self.name,
        )

    def make_model_for(self, state):
        if state["steps"] >= 4:  # the structure is not saved: DECAY comes back one layer short
            return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh())
        return net()
'''

USER_TESTS = """
import collections
import dataclasses
import datetime
import enum

import torch


class Stage(enum.Enum):
    A = 1
    B = 2


@dataclasses.dataclass
class SeedState:
    stage: Stage
    entered: datetime.datetime
    history: collections.deque


def test_every_refused_object_is_listed(ckpt_roundtrip):
    state = SeedState(Stage.A, datetime.datetime(2026, 1, 1), collections.deque([Stage.B]))
    ckpt_roundtrip({"seed": state})


def test_resume_of_another_subjects_system(ckpt_resume):
    ckpt_resume({"net": torch.nn.Linear(2, 2)})


def test_lightning_goldens(ckpt_backcompat, tmp_path):
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "epoch=0-step=2.ckpt")
    torch.save({"other": 1}, tmp_path / "not-a-golden.pt")
    assert list(ckpt_backcompat(tmp_path, pattern="*.ckpt")) == ["epoch=0-step=2.ckpt"]
"""

OVERRIDE_CONFTEST = """
import pytest
import user_subject


@pytest.fixture(scope="session")
def ckpt_subject():
    return user_subject.PhasedSubject()
"""


def make_project(root: Path, **files: str) -> Path:
    project = root / "project"
    project.mkdir()
    (project / "pytest.ini").write_text(
        "[pytest]\nckpt_roundtrip = true\nckpt_subject = user_subject:PhasedSubject\n"
    )
    (project / "user_subject.py").write_text(USER_SUBJECT)
    for name, text in files.items():
        (project / name).write_text(textwrap.dedent(text))
    outside = root / "outside"
    outside.mkdir()
    (outside / "report.md").write_text("an old report\n")
    return project


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(project)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    root = tmp_path_factory.mktemp("user")
    project = make_project(root, **{"test_user.py": USER_TESTS})
    report = root / "outside" / "report.md"
    return run(project, "-v", "-k", "not snapshot", f"--ckpt-report={report}"), report


def test_the_equals_form_of_ckpt_report_keeps_the_projects_configuration(user_run) -> None:
    result, report = user_run
    assert "subject phased (user_subject:PhasedSubject); no slot grids" in result.stdout
    assert "## pytest-ckpt" in report.read_text()


def test_a_subject_class_with_its_name_at_class_level_is_instantiated(user_run) -> None:
    result, _ = user_run
    assert "INTERNALERROR" not in result.stdout + result.stderr
    assert "4 failed, 3 passed, 2 deselected" in result.stdout


def test_a_plain_model_has_its_own_stages_and_items_without_a_grid(user_run) -> None:
    result, report = user_run
    for line in ("ckpt::roundtrip[WARMUP] PASSED", "ckpt::resume[WARMUP] PASSED"):
        assert line in result.stdout
    table = result.stdout[result.stdout.index("pytest-ckpt matrix") :].splitlines()
    assert table[2].split() == ["stage", "roundtrip/resume/snapshot"]
    assert table[3].split() == ["WARMUP", "ok/ok/--"] and table[4].split() == [
        "DECAY",
        "FAIL/FAIL/--",
    ]
    assert "| DECAY | FAIL/FAIL/-- |" in report.read_text()


def test_a_rebuild_error_reaches_the_terminal_and_the_report_cause_first(user_run) -> None:
    result, report = user_run
    cause = (
        "SubjectError: subject phased: rebuild() raised RuntimeError: Error(s) in loading "
        "state_dict for Sequential:"
    )
    keys = '    Unexpected key(s) in state_dict: "2.weight", "2.bias".'
    assert f"{cause}\n{keys}" in result.stdout
    assert "Traceback" not in result.stdout
    text = report.read_text()
    failure = text[text.index("**`ckpt::roundtrip[DECAY]`**") :]
    assert failure.split("```")[1].strip().splitlines()[:2] == [cause, keys]


def test_the_live_scan_lists_every_refused_object(user_run) -> None:
    result, _ = user_run
    assert "refused the checkpoint: 5 object(s) it cannot load:" in result.stdout
    for path in ("", ".stage", ".entered", ".history", ".history[0]"):
        assert f"  root['seed']{path} is " in result.stdout


def test_ckpt_resume_of_another_subjects_system_says_so(user_run) -> None:
    result, _ = user_run
    assert "SubjectError: subject phased: export_state() raised KeyError: 'model'" in result.stdout
    assert "KeyError: 'optimizer'" not in result.stdout


def test_ckpt_backcompat_takes_a_pattern(user_run) -> None:
    result, _ = user_run
    assert "test_user.py::test_lightning_goldens PASSED" in result.stdout


def test_the_space_form_of_ckpt_report_with_an_existing_outside_path_is_a_usage_error(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path)
    report = tmp_path / "outside" / "report.md"
    result = run(project, "--ckpt-report", str(report))
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert f"Write --ckpt-report={report}" in result.stderr
    assert report.read_text() == "an old report\n"


def test_overriding_the_subject_fixture_with_the_matrix_on_is_a_usage_error(tmp_path) -> None:
    """Under xdist too: the controller, which collects nothing, sees the project's conftest."""
    project = make_project(tmp_path, **{"conftest.py": OVERRIDE_CONFTEST})
    result = run(project, "-n", "2")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert "conftest.py:6 overrides the ckpt_subject fixture, but the --ckpt-roundtrip matrix" in (
        result.stderr
    )
    assert 'Point ckpt_subject = "package.module:factory" (ini)' in result.stderr
