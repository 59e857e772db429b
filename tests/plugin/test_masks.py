"""`PATTERN: unchecked` masks any value (a version string, a hostname, a timestamp), not only
floats; a pattern that matches nothing is a warning; a mask added after recording says the
snapshot needs re-recording; the help and the errors name `unchecked`."""

from __future__ import annotations

import pytest

ARGS = ("--ckpt-roundtrip", "--ckpt-subject", "labelled_subject:make", "-k", "snapshot")


def ini(pytester: pytest.Pytester, *rules: str) -> None:
    lines = "".join(f"    {rule}\n" for rule in rules)
    pytester.makeini(f"[pytest]\nckpt_snapshot_tolerances =\n{lines}")


def test_an_unchecked_string_is_masked_so_a_new_value_still_matches(
    ckpt_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini(ckpt_pytester, "step.telemetry.*.label: unchecked")
    monkeypatch.setenv("CKPT_TEST_LABEL", "transformers-4.51.0")
    ckpt_pytester.runpytest_subprocess(*ARGS, "--snapshot-update").assert_outcomes(
        passed=1, deselected=3
    )
    text = next(ckpt_pytester.path.rglob("ckpt.ckpt-ambr")).read_text()
    assert "'label': <str>" in text and "4.51" not in text
    monkeypatch.setenv("CKPT_TEST_LABEL", "transformers-4.52.0")
    ckpt_pytester.runpytest_subprocess(*ARGS).assert_outcomes(passed=1, deselected=3)


@pytest.mark.slow  # 10 s: a warning only; the other masking tests stay in the default suite
def test_a_pattern_that_matches_nothing_is_a_warning(ckpt_pytester: pytest.Pytester) -> None:
    ini(ckpt_pytester, "step.telemetry.*.label: unchecked", "state.no_such_field: unchecked")
    result = ckpt_pytester.runpytest_subprocess(*ARGS, "--snapshot-update")
    result.assert_outcomes(passed=1, deselected=3)
    result.stdout.fnmatch_lines(
        ["warning: snapshot tolerance pattern 'state.no_such_field' matched no value*"]
    )
    result.stdout.no_fnmatch_line("*pattern 'step.telemetry.[*].label'*")


def test_a_mask_added_after_recording_says_the_snapshot_needs_re_recording(
    ckpt_pytester: pytest.Pytester,
) -> None:
    ckpt_pytester.runpytest_subprocess(*ARGS, "--snapshot-update").assert_outcomes(
        passed=1, deselected=3
    )
    ini(ckpt_pytester, "step.metrics.loss: unchecked")
    result = ckpt_pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(failed=1, deselected=3)
    result.stdout.fnmatch_lines(
        [
            "*step.metrics.loss: an 'unchecked' rule masks it now, but the snapshot recorded its "
            "value: the snapshot needs re-recording (--snapshot-update)*"
        ]
    )


def test_help_documents_unchecked_and_any_is_refused_naming_it(
    ckpt_pytester: pytest.Pytester,
) -> None:
    help_text = " ".join(ckpt_pytester.runpytest_subprocess("--help").stdout.str().split())
    assert "PATTERN: any" not in help_text and "PATTERN: unchecked" in help_text
    ini(ckpt_pytester, "step.metrics.loss: any")
    result = ckpt_pytester.runpytest_subprocess(*ARGS)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ckpt_snapshot_tolerances*'PATTERN: unchecked'*"])
