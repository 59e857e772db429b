"""--ckpt-roundtrip: off adds nothing; on generates the matrix and passes on the reference."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_ckpt.vocabulary import LIFECYCLE_STAGES


def test_flag_off_adds_no_items(ckpt_pytester: pytest.Pytester) -> None:
    result = ckpt_pytester.runpytest_subprocess("-v")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*ckpt::*")
    result.stdout.no_fnmatch_line("*pytest-ckpt matrix*")


def test_importing_the_plugin_does_not_import_torch() -> None:
    code = "import sys, pytest_ckpt.plugin; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_flag_on_generates_the_matrix_and_it_passes_on_the_reference(
    ckpt_pytester: pytest.Pytester,
) -> None:
    args = ["--ckpt-roundtrip", "--ckpt-stages", "GERMINATED,BLENDING", "--ckpt-grids", "1x1,1x2"]
    first = ckpt_pytester.runpytest_subprocess(*args, "--snapshot-update", "-v")
    first.assert_outcomes(passed=13)
    first.stdout.fnmatch_lines(
        [
            "*ckpt::roundtrip?GERMINATED-1x1? PASSED*",
            "*ckpt::resume?BLENDING-1x2? PASSED*",
            "*ckpt::snapshot?BLENDING-1x2? PASSED*",
        ]
    )
    assert (
        ckpt_pytester.path / "__ckpt_snapshots__" / "reference-cnn" / "ckpt.ckpt-ambr"
    ).is_file()
    second = ckpt_pytester.runpytest_subprocess(*args)
    second.assert_outcomes(passed=13)
    second.stdout.re_match_lines(
        [
            r".*pytest-ckpt matrix.*",
            r"subject reference-cnn \(pytest_ckpt.reference.subject:ReferenceSubject\); "
            r"each cell: roundtrip/resume/snapshot",
            r"stage \\ grid\s+1x1\s+1x2",
            r"GERMINATED\s+ok/ok/ok\s+ok/ok/ok",
            r"BLENDING\s+ok/ok/ok\s+ok/ok/ok",
        ]
    )
    assert second.ret == 0


def test_a_missing_snapshot_fails_until_a_person_accepts_it(ckpt_pytester) -> None:
    result = ckpt_pytester.runpytest_subprocess(
        "--ckpt-roundtrip", "--ckpt-stages", "BLENDING", "--ckpt-grids", "1x1", "-k", "snapshot"
    )
    result.assert_outcomes(failed=1, deselected=3)
    result.stdout.fnmatch_lines(
        [
            "*no snapshot yet for snapshot?BLENDING-1x1? (subject reference-cnn): review the state "
            "below and run with --snapshot-update to record it*"
        ]
    )


def test_k_selects_generated_items(ckpt_pytester: pytest.Pytester) -> None:
    result = ckpt_pytester.runpytest_subprocess(
        "--ckpt-roundtrip",
        "--ckpt-stages",
        "all",
        "--ckpt-grids",
        "1x1",
        "-k",
        "roundtrip",
        "--co",
        "-q",
    )
    result.stdout.fnmatch_lines([f"ckpt::roundtrip[[]{s}-1x1[]]" for s in LIFECYCLE_STAGES])
    result.stdout.no_fnmatch_line("*ckpt::resume*")


def test_ini_twin_turns_the_matrix_on(ckpt_pytester: pytest.Pytester) -> None:
    ckpt_pytester.makeini(
        "[pytest]\nckpt_roundtrip = true\nckpt_stages = PROBATIONARY\nckpt_grids = 1x3\n"
    )
    result = ckpt_pytester.runpytest_subprocess("--co", "-q")
    result.stdout.fnmatch_lines(
        ["ckpt::roundtrip[[]PROBATIONARY-1x3[]]", "ckpt::snapshot[[]PROBATIONARY-1x3[]]"]
    )


def test_entry_point_loads_the_plugin_in_a_fresh_process(tmp_path) -> None:
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--ckpt-roundtrip",
            "--ckpt-stages",
            "BLENDING",
            "--ckpt-grids",
            "1x1",
            "--co",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ckpt::resume[BLENDING-1x1]" in result.stdout
