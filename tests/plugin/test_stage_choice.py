"""The stages the matrix tests are said, and so are the subject's stages it leaves out: a
later stage the default list does not name (HOLDING) is not dropped silently."""

from __future__ import annotations

import pytest

HOLDING_SUBJECT = """
import torch

from pytest_ckpt import ModuleSubject


def make():
    return ModuleSubject(
        lambda: torch.nn.Linear(4, 1),
        make_batch=lambda g: (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)),
        stages={"GERMINATED": 1, "BLENDING": 2, "HOLDING": 3},
        name="holding",
    )
"""
ARGS = ("--ckpt-roundtrip", "--ckpt-subject", "holding_subject:make", "-k", "roundtrip")


@pytest.fixture
def holding(ckpt_pytester: pytest.Pytester) -> pytest.Pytester:
    ckpt_pytester.makepyfile(holding_subject=HOLDING_SUBJECT)
    return ckpt_pytester


def test_the_default_stages_name_the_stage_they_leave_out(holding: pytest.Pytester) -> None:
    result = holding.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=2, deselected=5)
    result.stdout.fnmatch_lines(
        [
            "stages tested: GERMINATED, BLENDING; not tested: HOLDING "
            "(--ckpt-stages all, or a list, tests it)"
        ]
    )


@pytest.mark.slow  # a pytest process; the default stages' test above stays fast
def test_all_stages_leave_nothing_out(holding: pytest.Pytester) -> None:
    result = holding.runpytest_subprocess(*ARGS, "--ckpt-stages", "all")
    result.assert_outcomes(passed=3, deselected=7)
    result.stdout.fnmatch_lines(["stages tested: GERMINATED, BLENDING, HOLDING"])
    result.stdout.no_fnmatch_line("*not tested*")
