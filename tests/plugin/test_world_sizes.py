"""--ckpt-world-sizes: resume across world sizes as matrix items, on a user's plain model."""

from __future__ import annotations

import pytest

TINY_SUBJECT = """
import torch

from pytest_ckpt import ModuleSubject


def make():
    return ModuleSubject(
        lambda: torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)),
        make_batch=lambda g: (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)),
        name="tiny",
    )
"""


def test_a_plain_model_resumes_across_world_sizes_as_matrix_items(
    ckpt_pytester: pytest.Pytester,
) -> None:
    ckpt_pytester.makepyfile(tiny_subject=TINY_SUBJECT)
    args = ["--ckpt-roundtrip", "--ckpt-subject", "tiny_subject:make", "-k", "world_size"]
    result = ckpt_pytester.runpytest_subprocess(
        *args, "--ckpt-world-sizes", "2:1,1:2", "-v", "--ckpt-report=r.md"
    )
    result.assert_outcomes(passed=2, deselected=4)
    result.stdout.fnmatch_lines(
        [
            "*ckpt::world_size?TRAINING-2:1? PASSED*",
            "*ckpt::world_size?TRAINING-1:2? PASSED*",
            "resume across world sizes (save:load ranks):",
            "TRAINING*2:1 ok, 1:2 ok",
        ],
        consecutive=False,
    )
    assert "| TRAINING | 2:1 ok, 1:2 ok |" in (ckpt_pytester.path / "r.md").read_text()
    plain = ckpt_pytester.runpytest_subprocess(*args)  # the option off: no such items
    plain.assert_outcomes(deselected=4)


def test_world_sizes_for_a_subject_without_a_distributed_build_are_a_usage_error(
    ckpt_pytester: pytest.Pytester,
) -> None:
    result = ckpt_pytester.runpytest_subprocess("--ckpt-roundtrip", "--ckpt-world-sizes", "2:1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--ckpt-world-sizes: subject reference-cnn has no distributed build: give it*"]
    )


def test_a_bad_pair_is_a_usage_error_listing_the_forms(ckpt_pytester: pytest.Pytester) -> None:
    result = ckpt_pytester.runpytest_subprocess("--ckpt-world-sizes", "2-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ckpt-world-sizes: invalid world-size pair(s) 2-1; SAVE:LOAD*"])


@pytest.mark.slow
def test_optimizer_state_saved_rank_local_fails_naming_rank_and_key(
    ckpt_pytester: pytest.Pytester,
) -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    ckpt_pytester.makepyfile(
        rank_local_subject=f"""
import sys
sys.path.insert(0, {str(root)!r})
from tests.distributed.test_world_size import RankLocalOptimizer, tiny


def make():
    return tiny(RankLocalOptimizer)
"""
    )
    result = ckpt_pytester.runpytest_subprocess(
        "--ckpt-roundtrip", "--ckpt-subject", "rank_local_subject:make",
        "-k", "world_size", "--ckpt-world-sizes", "2:2,2:1",
    )  # fmt: skip
    result.assert_outcomes(passed=1, failed=1, deselected=4)
    result.stdout.fnmatch_lines(
        [
            "*WorldSizeResumeMismatch: rank 0 (load at 1 rank(s)): could not restore*",
            "TRAINING*2:2 ok, 2:1 FAIL",
        ],
        consecutive=False,
    )
