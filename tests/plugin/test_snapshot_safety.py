"""A snapshot update touches only the snapshots of the items that ran: another subject's
committed matrix snapshots, and the entries of stages not tested this run, stay byte-identical,
whatever else in the project uses syrupy."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugin.test_snapshots import SCALED_SUBJECT

TWO_STAGES = """
import torch

from pytest_ckpt import ModuleSubject


def make():
    return ModuleSubject(
        lambda: torch.nn.Linear(4, 1),
        make_batch=lambda g: (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)),
        stages={"WARMUP": 1, "TRAINING": 2},
        name="staged",
    )
"""
# The user's own syrupy tests next to the project root: a plain amber snapshot and ours.
USER_TESTS = """
def test_plain_snapshot(snapshot):
    assert snapshot == {"a": 1}


def test_ckpt_snapshot(ckpt_snapshot):
    assert ckpt_snapshot == {"b": 2.5}
"""


@pytest.fixture
def project(ckpt_pytester: pytest.Pytester) -> pytest.Pytester:
    ckpt_pytester.makepyfile(scaled_subject=SCALED_SUBJECT, staged_subject=TWO_STAGES)
    ckpt_pytester.makepyfile(test_user=USER_TESTS)
    return ckpt_pytester


def update(pytester: pytest.Pytester, subject: str, *extra: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--ckpt-roundtrip",
        "--ckpt-subject",
        subject,
        "--snapshot-update",
        "-p",
        "no:randomly",
        *extra,
    )


def files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "snapshots__" in str(path)
    }


def test_an_update_for_one_subject_leaves_the_other_subjects_snapshots_byte_identical(
    project: pytest.Pytester,
) -> None:
    update(project, "scaled_subject:make").assert_outcomes(passed=6)
    first = files(project.path)
    assert any(name.endswith("scaled/ckpt.ckpt-ambr") for name in first)

    result = update(project, "scaled_subject:make_other")
    result.assert_outcomes(passed=6)
    result.stdout.no_fnmatch_line("*Deleted*")
    second = files(project.path)
    assert {k: v for k, v in second.items() if "scaled/" in k} == {
        k: v for k, v in first.items() if "scaled/" in k
    }

    update(project, "scaled_subject:make").assert_outcomes(passed=6)
    third = files(project.path)
    assert third == second  # the first subject's run now leaves the other's alone too
    assert any(name.endswith("other/ckpt.ckpt-ambr") for name in third)
    plain = project.runpytest_subprocess(
        "--ckpt-roundtrip", "--ckpt-subject", "scaled_subject:make"
    )
    plain.assert_outcomes(passed=6)
    plain.stdout.no_fnmatch_line("*unused*")


def test_an_update_of_some_stages_keeps_the_snapshots_of_the_others(
    project: pytest.Pytester,
) -> None:
    update(project, "staged_subject:make", "-k", "snapshot").assert_outcomes(passed=4, deselected=5)
    before = files(project.path)
    text = next(v for k, v in before.items() if k.endswith("staged/ckpt.ckpt-ambr")).decode()
    assert "snapshot[WARMUP]" in text and "snapshot[TRAINING]" in text

    result = update(project, "staged_subject:make", "--ckpt-stages", "TRAINING")
    result.assert_outcomes(passed=6)
    result.stdout.no_fnmatch_line("*Deleted*")
    assert files(project.path) == before
