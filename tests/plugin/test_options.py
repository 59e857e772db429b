"""Bad --ckpt-* values are usage errors that name the option, never tracebacks."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ckpt-grids", "3y2"], "*--ckpt-grids: invalid grid(s) 3y2; expected ROWSxCOLS*"),
        (["--ckpt-stages", "BLEND-ED"], "*--ckpt-stages: invalid stage name(s) BLEND-ED: *"),
        (["--ckpt-resume-steps", "0"], "*--ckpt-resume-steps: expected a positive integer*"),
        (["--ckpt-subject", "nocolon"], "*--ckpt-subject: expected 'package.module:factory'*"),
        (["--ckpt-snapshot-floats", "fuzzy"], "*--ckpt-snapshot-floats: expected one of exact*"),
        (["--ckpt-snapshot-rtol", "-1"], "*--ckpt-snapshot-rtol: expected a finite number >= 0*"),
    ],
)
def test_bad_command_line_values_are_usage_errors(ckpt_pytester, args, message) -> None:
    result = ckpt_pytester.runpytest_subprocess("--ckpt-roundtrip", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--ckpt-subject", "no_such_module:make"],
            "*--ckpt-subject / ckpt_subject: cannot import module 'no_such_module'*",
        ),
        (
            ["--ckpt-subject", "leaky_subject:missing"],
            "*module 'leaky_subject' has no attribute 'missing'*",
        ),
        (
            ["--ckpt-subject", "os:getcwd"],
            "*os:getcwd gave a str, which is not a pytest_ckpt.Subject*",
        ),
        (
            ["--ckpt-subject", "labelled_subject:make", "--ckpt-stages", "BLENDING"],
            "*--ckpt-stages: subject labelled cannot reach BLENDING (it reaches TRAINING)*",
        ),
        (
            ["--ckpt-stages", "BLENDED"],
            "*--ckpt-stages: subject reference-cnn cannot reach BLENDED (it reaches DORMANT, *",
        ),
        (
            ["--ckpt-grids", "1x1,5x1"],
            "*--ckpt-grids / ckpt_grids: subject reference-cnn cannot be built on 5x1: slot "
            "'r4c0' needs injection depth 4, but this cnn host has 4 (rows 0..3)*",
        ),
        (
            ["--ckpt-subject", "labelled_subject:make", "--ckpt-grids", "2x2"],
            "*--ckpt-grids / ckpt_grids: subject labelled has no slot grids (supports_grids is "
            "False), so it is tested once per stage: remove the grids option",
        ),
    ],
)
def test_subjects_that_do_not_load_are_usage_errors(ckpt_pytester, args, message) -> None:
    result = ckpt_pytester.runpytest_subprocess("--ckpt-roundtrip", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


@pytest.mark.parametrize(
    ("ini", "message"),
    [
        ("ckpt_grids = 0x1", "*ini option ckpt_grids (--ckpt-grids): invalid grid(s) 0x1*"),
        (
            "ckpt_snapshot_tolerances =\n    step.*: rtol=lots",
            "*ini option ckpt_snapshot_tolerances: 'step.*: rtol=lots': rtol must be a number*",
        ),
    ],
)
def test_bad_ini_values_are_usage_errors_naming_the_ini_key(ckpt_pytester, ini, message) -> None:
    ckpt_pytester.makeini(f"[pytest]\nckpt_roundtrip = true\n{ini}\n")
    result = ckpt_pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_the_command_line_overrides_the_ini(ckpt_pytester) -> None:
    ckpt_pytester.makeini("[pytest]\nckpt_roundtrip = true\nckpt_stages = PRUNED\n")
    result = ckpt_pytester.runpytest_subprocess(
        "--ckpt-stages", "FOSSILIZED", "--co", "-q", "--ckpt-grids", "1x1"
    )
    result.stdout.fnmatch_lines(["ckpt::roundtrip[[]FOSSILIZED-1x1[]]"])
    result.stdout.no_fnmatch_line("*PRUNED*")


def test_a_plain_module_subject_needs_no_stage_configuration(ckpt_pytester) -> None:
    result = ckpt_pytester.runpytest_subprocess(
        "--ckpt-roundtrip", "--ckpt-subject", "labelled_subject:make", "--co", "-q"
    )
    result.stdout.fnmatch_lines(
        [
            "ckpt::roundtrip[[]TRAINING[]]",
            "ckpt::resume[[]TRAINING[]]",
            "ckpt::snapshot[[]TRAINING[]]",
        ]
    )
