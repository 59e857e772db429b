"""A subject's own error in export_state is reported as its own: the question "is this system
one this subject's build() made?" comes only when the system is not one it made."""

from __future__ import annotations

import pytest

BUGGY_SUBJECT = """
import torch

from pytest_ckpt import ModuleSubject


class BuggySubject(ModuleSubject):
    def export_state(self, system):
        state = super().export_state(system)
        state["normalizer"] = system["model"].obs_rms  # the subject's own typo
        return state


def make():
    return BuggySubject(
        lambda: torch.nn.Linear(4, 1),
        make_batch=lambda g: (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)),
        name="buggy",
    )
"""
WRONG_SYSTEM_TEST = """
def test_resume_of_a_dict(ckpt_model, ckpt_resume):
    ckpt_resume({"not": "a system"})
"""


@pytest.fixture
def buggy(ckpt_pytester: pytest.Pytester) -> pytest.Pytester:
    ckpt_pytester.makepyfile(buggy_subject=BUGGY_SUBJECT)
    return ckpt_pytester


def test_an_attribute_error_in_the_subjects_own_export_is_not_blamed_on_the_system(
    buggy: pytest.Pytester,
) -> None:
    result = buggy.runpytest_subprocess(
        "--ckpt-roundtrip", "--ckpt-subject", "buggy_subject:make", "-k", "roundtrip"
    )
    result.assert_outcomes(failed=1, deselected=3)
    result.stdout.fnmatch_lines(["*subject buggy: export_state() raised AttributeError: *obs_rms*"])
    result.stdout.no_fnmatch_line("*is this system one this subject's build() made?*")


def test_a_system_build_did_not_make_is_asked_about(buggy: pytest.Pytester) -> None:
    buggy.makepyfile(test_wrong=WRONG_SYSTEM_TEST)
    buggy.makeini("[pytest]\nckpt_subject = buggy_subject:make\n")
    result = buggy.runpytest_subprocess("test_wrong.py", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*is this system one this subject's build() made?*this is a dict*"]
    )
