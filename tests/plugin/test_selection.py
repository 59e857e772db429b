"""The generated items are selected as users select tests: by the node id the summary prints,
and with `-m` by the `ckpt` marker or the marker of their kind."""

from __future__ import annotations

import pytest

ARGS = ("--ckpt-roundtrip", "--ckpt-subject", "labelled_subject:make", "-p", "no:randomly")


def test_the_printed_node_id_reruns_that_item_alone(ckpt_pytester: pytest.Pytester) -> None:
    result = ckpt_pytester.runpytest_subprocess(*ARGS, "ckpt::resume[TRAINING]", "-v")
    result.stdout.fnmatch_lines(["ckpt::resume[[]TRAINING[]] PASSED*"])
    result.assert_outcomes(passed=1, deselected=2)


@pytest.mark.slow  # a pytest process; the full node id test above stays fast
def test_a_node_id_prefix_and_a_test_file_select_together(ckpt_pytester: pytest.Pytester) -> None:
    result = ckpt_pytester.runpytest_subprocess(*ARGS, "ckpt::roundtrip", "test_plain.py", "-v")
    result.stdout.fnmatch_lines(["test_plain.py::test_plain PASSED*"], consecutive=False)
    result.stdout.fnmatch_lines(["ckpt::roundtrip[[]TRAINING[]] PASSED*"], consecutive=False)
    result.assert_outcomes(passed=2, deselected=2)


def test_a_node_id_without_the_flag_says_how_to_run_it(ckpt_pytester: pytest.Pytester) -> None:
    result = ckpt_pytester.runpytest_subprocess("ckpt::resume[TRAINING]")
    result.stderr.fnmatch_lines(["*ckpt::resume[[]TRAINING[]]*--ckpt-roundtrip*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_dash_m_ckpt_selects_the_generated_items(ckpt_pytester: pytest.Pytester) -> None:
    result = ckpt_pytester.runpytest_subprocess(*ARGS, "-m", "ckpt", "--strict-markers")
    result.assert_outcomes(passed=2, failed=1, deselected=1)  # no snapshot recorded yet


@pytest.mark.slow  # a pytest process; -m ckpt above stays fast, --markers lists every kind
def test_each_kind_has_its_own_marker(ckpt_pytester: pytest.Pytester) -> None:
    result = ckpt_pytester.runpytest_subprocess(*ARGS, "-m", "ckpt_snapshot or ckpt_resume", "-v")
    result.stdout.fnmatch_lines(["ckpt::resume*PASSED*", "ckpt::snapshot*FAILED*"])
    result.assert_outcomes(passed=1, failed=1, deselected=2)


def test_the_markers_are_registered_and_documented(ckpt_pytester: pytest.Pytester) -> None:
    result = ckpt_pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.ckpt: *--ckpt-roundtrip*",
            "@pytest.mark.ckpt_roundtrip: *",
            "@pytest.mark.ckpt_resume: *",
            "@pytest.mark.ckpt_snapshot: *",
            "@pytest.mark.ckpt_world_size: *",
        ],
        consecutive=False,
    )
