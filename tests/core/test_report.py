from __future__ import annotations

from pytest_ckpt.report import MatrixReport


def _report() -> MatrixReport:
    report = MatrixReport(subject="demo")
    for kind in ("roundtrip", "resume", "snapshot"):
        report.record(f"ckpt::{kind}[BLENDING-1x1]", "setup", "passed", "")
        report.record(f"ckpt::{kind}[BLENDING-1x1]", "call", "passed", "")
    report.record(
        "ckpt::roundtrip[BLENDING-2x2]", "call", "failed", "\x1b[31mboom\x1b[0m at root['x']"
    )
    report.record("ckpt::roundtrip[BLENDING-2x2]", "teardown", "passed", "")
    report.record("tests/test_other.py::test_x", "call", "failed", "not ours")
    return report


def test_terminal_table() -> None:
    assert _report().terminal_lines() == [
        "subject demo; each cell: roundtrip/resume/snapshot",
        "stage \\ grid  1x1       2x2",
        "BLENDING      ok/ok/ok  FAIL/--/--",
    ]


def test_markdown_has_the_table_and_failures_without_colour_codes() -> None:
    text = _report().markdown()
    assert "3/4 checks passed" in text
    assert "| BLENDING | ok/ok/ok | FAIL/--/-- |" in text
    assert "**`ckpt::roundtrip[BLENDING-2x2]`**" in text
    assert "boom at root['x']" in text and "\x1b" not in text
    assert "not ours" not in text
