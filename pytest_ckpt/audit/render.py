"""Audit reports as text (one line per problem), JSON, or SARIF 2.1.0 for code-scanning UIs.

Everything a file put in a report (global names, keys, member names) is data: the text
report escapes every character that is not printable (ESC, CR, newlines, bidi controls), so
a file cannot draw its own "ok" line; JSON and SARIF escape through `json.dumps`, and the
SARIF artifact URI is percent-encoded. Repeats are grouped, so a file with a thousand
findings of one kind prints a few lines.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import PurePath
from urllib.parse import quote

from pytest_ckpt.audit import Report
from pytest_ckpt.audit.escape import escape
from pytest_ckpt.audit.global_kinds import kind_of
from pytest_ckpt.audit.nodes import MAX_FINDINGS, Finding

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SHOWN_PER_GROUP = 20  # objects listed under one fix line before "... and N more"
_OFFSET = re.compile(r"offset \d+")


def _sites(finding: Finding) -> str:
    """Every other path of the same object (none dropped; past the per-pickle bound on
    routes, counted)."""
    if not finding.also_at and not finding.more_sites:
        return ""
    listed = ", ".join(map(escape, finding.also_at))
    more = f"{' and ' if listed else ''}{finding.more_sites} more" if finding.more_sites else ""
    return f" (the same object is also at {listed}{more})"


def _groups(findings: Sequence[Finding]) -> Iterator[list[Finding]]:
    """Findings grouped by the global, what they say (offsets aside), fix and per-object
    verdict, in order of first appearance: one fix line per class, its paths under it."""
    groups: dict[tuple, list[Finding]] = {}
    for finding in findings:
        what = _OFFSET.sub("offset ...", finding.detail)
        key = (finding.global_name, what, finding.fix, finding.needs, finding.allowlist_helps)
        groups.setdefault(key, []).append(finding)
    yield from groups.values()


# Formats no torch.serialization.safe_globals list applies to: DCP has its own reader,
# safetensors has no pickle, an SB3 zip's `data` is cloudpickled whatever torch allows.
NOT_TORCH_LOAD = frozenset({"dcp", "safetensors", "sb3-zip"})


def _undecided(finding: Finding) -> bool:
    """A global the auditor cannot tell class from function: it is never offered."""
    name = finding.global_name
    return bool(name) and not finding.needs and kind_of(name or "") == "unknown"


def _allowlist_line(report: Report) -> str:
    if report.safe_globals is None:
        blockers = [f for f in report.findings if not f.needs]
        if blockers and all(_undecided(f) for f in blockers):
            names = sorted({escape(f.global_name or "") for f in blockers})
            return (
                f"  allowlist: none offered: the auditor cannot tell whether {', '.join(names)} "
                "are classes or functions (no source found, or the saving script's __main__), "
                "and it never offers what may run code"
            )
        return "  allowlist: no torch.serialization.safe_globals list makes torch load this file"
    listed = ", ".join(escape(name) for name in report.safe_globals)
    return (
        f"  allowlist: torch.serialization.safe_globals([{listed}]) makes torch load this file "
        "(only if you trust these classes: an allowed class's code runs on load)"
    )


def _helps(report: Report, finding: Finding, count: int) -> str:
    """Would allow-listing be enough for these objects (each alone: the whole file's answer
    is the allowlist line)?"""
    if not finding.global_name or report.format in NOT_TORCH_LOAD:
        return ""
    them = "this object" if count == 1 else "these objects"
    if finding.allowlist_helps:
        names = ", ".join(map(escape, finding.needs))
        return f"; for {them}, add_safe_globals would be enough ({names})"
    if _undecided(finding):
        return "; not offered for add_safe_globals (class or function: the auditor cannot tell)"
    return f"; for {them}, add_safe_globals would not be enough"


def _finding_lines(report: Report) -> list[str]:
    """One line for a lone object (its path first); a group of objects of one class gets
    one fix line, then every path under it (SHOWN_PER_GROUP objects, then a count)."""
    lines = []
    for members in _groups(report.findings):
        first = members[0]
        helps = _helps(report, first, len(members))
        if len(members) == 1:
            lines.append(
                f"  {escape(first.path)}: {escape(first.detail)}. Fix: {escape(first.fix)}"
                f"{helps}{_sites(first)}"
            )
            continue
        paths = sum(1 + len(f.also_at) + f.more_sites for f in members)
        what = escape(_OFFSET.sub("offset ...", first.detail))
        lines.append(
            f"  {what}: {len(members)} objects at {paths} paths. Fix: {escape(first.fix)}{helps}"
        )
        lines += [f"    {escape(f.path)}{_sites(f)}" for f in members[:SHOWN_PER_GROUP]]
        if len(members) > SHOWN_PER_GROUP:
            lines.append(
                f"    ... and {len(members) - SHOWN_PER_GROUP} more object(s) of this kind "
                "(--json lists every path)"
            )
    return lines


def render_text(reports: Sequence[Report]) -> str:
    lines = []
    for report in reports:
        path = escape(report.path)
        if report.error is not None:
            lines.append(f"{path}: unreadable: {escape(report.error)}")
        elif report.loadable and report.summary:
            lines.append(f"{path}: ok ({report.format}, {escape(report.summary)})")
        elif report.loadable:
            lines.append(
                f"{path}: ok ({report.format}, {report.storages} storages): loads with "
                f"weights_only=True"
            )
        else:
            total = len(report.findings) + report.findings_omitted
            paths = sum(1 + len(f.also_at) + f.more_sites for f in report.findings)
            at = f" at {paths} path(s)" if paths != len(report.findings) else ""
            lines.append(f"{path}: {total} finding(s){at} ({report.format})")
            lines += _finding_lines(report)
            if report.findings_omitted:
                lines.append(
                    f"  ... and {report.findings_omitted} more finding(s) not kept (the "
                    f"auditor keeps {MAX_FINDINGS} per pickle, then the first of each "
                    "other kind)"
                )
            if report.format not in NOT_TORCH_LOAD:
                lines.append(_allowlist_line(report))
        lines += [f"  note: {escape(note)}" for note in report.notes]
    return "\n".join(lines)


def render_json(reports: Sequence[Report]) -> str:
    return json.dumps(json_entries(reports), indent=2)


def json_entries(reports: Sequence[Report]) -> list[dict]:
    """One JSON object per report (what `render_json` prints; the folder report adds to it)."""
    return [
        {
            "path": r.path,
            "format": r.format,
            # a file listed but not audited (not a checkpoint) has no verdict
            "loadable": None if r.format == "skipped" else r.loadable,
            "error": r.error,
            "storages": r.storages,
            "notes": list(r.notes),
            **({"summary": r.summary} if r.summary else {}),
            "safe_globals": r.safe_globals,
            "findings_omitted": r.findings_omitted,
            "findings": [dataclasses.asdict(f) for f in r.findings],
        }
        for r in reports
    ]


def artifact_uri(path: str) -> str:
    """A SARIF artifactLocation.uri for a local path: percent-encoded, '/'-separated (a
    file: URI when absolute); bytes that are not UTF-8 survive as their %XX escapes."""
    posix = path.replace(os.sep, "/") if os.sep != "/" else path
    encoded = quote(posix, safe="/", errors="surrogateescape")
    if not PurePath(path).is_absolute():
        return encoded
    return f"file://{encoded}" if encoded.startswith("/") else f"file:///{encoded}"  # C:/...


def render_sarif(reports: Sequence[Report]) -> str:
    results = []
    for report in reports:
        location = {"physicalLocation": {"artifactLocation": {"uri": artifact_uri(report.path)}}}
        if report.error is not None:
            results.append(
                {
                    "ruleId": "unreadable",
                    "level": "error",
                    "message": {"text": report.error},
                    "locations": [location],
                }
            )
        safe_globals = report.safe_globals  # first: it settles each finding's allowlistHelps
        for finding in report.findings:
            results.append(
                {
                    "ruleId": finding.kind,
                    "level": "error",
                    "message": {"text": f"{finding.detail}. Fix: {finding.fix}"},
                    "locations": [
                        {
                            **location,
                            "logicalLocations": [{"fullyQualifiedName": finding.path}],
                        }
                    ],
                    "properties": {
                        "global": finding.global_name,
                        "allowlistHelps": finding.allowlist_helps,
                        "pickleOffset": finding.offset,
                        "alsoAt": finding.also_at,
                        "safeGlobals": safe_globals,
                    },
                }
            )
        if report.findings_omitted:
            results.append(
                {
                    "ruleId": "findings-omitted",
                    "level": "note",
                    "message": {"text": f"{report.findings_omitted} more finding(s) not kept"},
                    "locations": [location],
                }
            )
    sarif = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "pytest-ckpt audit",
                        "informationUri": "https://pypi.org/project/pytest-ckpt/",
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(sarif, indent=2)
