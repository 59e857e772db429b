from __future__ import annotations

from types import SimpleNamespace

from pytest_ckpt.errors import CheckpointLoadError
from pytest_ckpt.plugin.report import FULL_FAILURE_PROPERTY, SHOWN_ITEMS, MatrixReport, shortened
from pytest_ckpt.plugin.session import CELL_PROPERTY, CkptSession


def _report() -> MatrixReport:
    report = MatrixReport(subject="demo")
    for kind in ("roundtrip", "resume", "snapshot"):
        report.record((kind, "BLENDING", "1x1"), "setup", "passed", "")
        report.record((kind, "BLENDING", "1x1"), "call", "passed", "")
    report.record(
        ("roundtrip", "BLENDING", "2x2"), "call", "failed", "\x1b[31mboom\x1b[0m at root['x']"
    )
    report.record(("roundtrip", "BLENDING", "2x2"), "teardown", "passed", "")
    record(report, [], "failed", "not ours")  # a plain test: it has no cell
    return report


def record(report: MatrixReport, properties: list, outcome: str, text: str) -> None:
    """What the session does with a test report (a stand-in with the fields it reads)."""
    test_report = SimpleNamespace(
        user_properties=properties,
        failed=outcome == "failed",
        outcome=outcome,
        longreprtext=text,
        when="call",
        nodeid="ckpt::x",
    )
    CkptSession.pytest_runtest_logreport(SimpleNamespace(report=report), test_report)  # type: ignore[arg-type]


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


def test_a_cell_sent_by_an_xdist_worker_as_a_list_is_recorded() -> None:
    report = MatrixReport(subject="demo")
    record(report, [(CELL_PROPERTY, ["resume", "PRUNED", "1x3"])], "passed", "")
    assert report.outcomes == {("resume", "PRUNED", "1x3"): "passed"}


def test_the_report_takes_the_whole_message_kept_by_ckpt_check_not_the_cut_terminal_one() -> None:
    report = MatrixReport(subject="demo")
    whole = "CheckpointLoadError: head\n" + "\n".join(f"  root[{i}] is x" for i in range(60))
    cell = (CELL_PROPERTY, ["roundtrip", "BLENDING", ""])
    record(report, [cell, (FULL_FAILURE_PROPERTY, whole)], "failed", "cut ... and 48 more")
    assert report.messages[("roundtrip", "BLENDING", "")] == whole
    assert "root[59] is x" in report.markdown()


def test_a_long_list_is_shortened_with_the_count_and_where_the_rest_is() -> None:
    err = CheckpointLoadError("refused:", items=[f"root[{i}]" for i in range(SHOWN_ITEMS + 3)])
    assert str(err).splitlines()[-1] == f"  root[{SHOWN_ITEMS + 2}]"
    lines = shortened(err, verbose=False, report="out/ckpt.md").splitlines()
    assert lines[0] == "refused:" and lines[SHOWN_ITEMS] == f"  root[{SHOWN_ITEMS - 1}]"
    assert lines[-1] == "  ... and 3 more (all in out/ckpt.md and with -v)"
    assert shortened(err, verbose=False, report=None).endswith(
        "(run with -v or --ckpt-report=PATH)"
    )
    assert shortened(err, verbose=True, report=None) == str(err)
