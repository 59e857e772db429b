"""What `pytest-ckpt audit PATH...` prints for what `walk.audit_target` found: the file
renderers' lines for each audited file (`render`), plus, for a folder, the layouts it
recognised, a line per skipped file and a total line; SARIF gains the list of every file
looked at, so a folder's clean and skipped files are in the report too."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from pytest_ckpt.audit import Report
from pytest_ckpt.audit.escape import escape
from pytest_ckpt.audit.formats.walk import DCP, SKIPPED, TargetAudit
from pytest_ckpt.audit.render import artifact_uri, render_text


def render_targets_text(targets: Sequence[TargetAudit]) -> str:
    return "\n".join(line for target in targets for line in _target_lines(target))


def _target_lines(target: TargetAudit) -> list[str]:
    """A folder's layout is announced just before the first of its files."""
    unannounced = {folder: name for folder, name in target.layouts if name != DCP}
    lines = []
    for report in target.reports:
        name = unannounced.pop(os.path.dirname(report.path), None)
        if name is not None:
            lines.append(f"{escape(os.path.dirname(report.path))}/: {name}")
        if report.format == SKIPPED:
            lines.append(f"{escape(report.path)}: skipped: {escape(report.summary or '')}")
        else:
            lines.append(render_text([report]))
    if target.folder:
        lines.append(total_line(target))
    return lines


def total_line(target: TargetAudit) -> str:
    """`total: N file(s) in PATH: a ok, b with findings, c unreadable, d skipped`."""
    reports = target.reports
    skipped = sum(r.format == SKIPPED for r in reports)
    unreadable = sum(r.error is not None for r in reports)
    unsafe = sum(r.error is None and bool(r.findings) for r in reports)
    ok = len(reports) - skipped - unreadable - unsafe
    return (
        f"total: {len(reports)} file(s) in {escape(target.path)}: {ok} ok, {unsafe} with findings, "
        f"{unreadable} unreadable, {skipped} skipped"
    )


def with_artifacts(sarif_text: str, reports: Sequence[Report]) -> str:
    """The SARIF log `render_sarif` wrote, with `runs[0].artifacts` naming every file and
    its verdict (SARIF results name only the files with problems)."""
    sarif = json.loads(sarif_text)
    sarif["runs"][0]["artifacts"] = [
        {
            "location": {"uri": artifact_uri(report.path)},
            "properties": {"format": report.format, "verdict": verdict(report)},
        }
        for report in reports
    ]
    return json.dumps(sarif, indent=2)


def verdict(report: Report) -> str:
    """ "skipped", "unreadable", "findings" or "ok"."""
    if report.format == SKIPPED:
        return SKIPPED
    if report.error is not None:
        return "unreadable"
    return "findings" if report.findings else "ok"
