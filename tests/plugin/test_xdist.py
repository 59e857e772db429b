"""The generated matrix under pytest-xdist: same items, same verdicts, same snapshots."""

from __future__ import annotations


def test_matrix_runs_under_two_workers_against_serial_snapshots(ckpt_pytester) -> None:
    args = ["--ckpt-roundtrip", "--ckpt-stages", "BLENDING,PROBATIONARY", "--ckpt-grids", "1x1,1x3"]
    ckpt_pytester.runpytest_subprocess(*args, "-n", "0", "--snapshot-update").assert_outcomes(
        passed=13
    )
    result = ckpt_pytester.runpytest_subprocess(*args, "-n", "2", "--ckpt-report", "r.md")
    result.assert_outcomes(passed=13)
    result.stdout.re_match_lines(
        [r"BLENDING\s+ok/ok/ok\s+ok/ok/ok", r"PROBATIONARY\s+ok/ok/ok\s+ok/ok/ok"]
    )
    assert "13/13" not in (ckpt_pytester.path / "r.md").read_text()  # 12 ckpt checks, not plain
    assert "12/12 checks passed" in (ckpt_pytester.path / "r.md").read_text()
