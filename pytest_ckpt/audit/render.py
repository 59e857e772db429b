"""Audit reports as text (one line per problem), JSON, or SARIF 2.1.0 for code-scanning UIs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from pytest_ckpt.audit import Report

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def render_text(reports: Sequence[Report]) -> str:
    lines = []
    for report in reports:
        if report.error is not None:
            lines.append(f"{report.path}: unreadable: {report.error}")
        elif report.loadable and report.summary:
            lines.append(f"{report.path}: ok ({report.format}, {report.summary})")
        elif report.loadable:
            lines.append(
                f"{report.path}: ok ({report.format}, {report.storages} storages): loads with "
                f"weights_only=True"
            )
        else:
            lines.append(f"{report.path}: {len(report.findings)} finding(s) ({report.format})")
            for finding in report.findings:
                helps = (
                    ""
                    if not finding.global_name or report.format == "dcp"  # DCP's own reader
                    else (
                        "; add_safe_globals would be enough"
                        if finding.allowlist_helps
                        else "; add_safe_globals would not be enough"
                    )
                )
                lines.append(f"  {finding.path}: {finding.detail}. Fix: {finding.fix}{helps}")
        lines += [f"  note: {note}" for note in report.notes]
    return "\n".join(lines)


def render_json(reports: Sequence[Report]) -> str:
    return json.dumps(
        [
            {
                "path": r.path,
                "format": r.format,
                "loadable": r.loadable,
                "error": r.error,
                "storages": r.storages,
                "notes": list(r.notes),
                **({"summary": r.summary} if r.summary else {}),
                "findings": [dataclasses.asdict(f) for f in r.findings],
            }
            for r in reports
        ],
        indent=2,
    )


def render_sarif(reports: Sequence[Report]) -> str:
    results = []
    for report in reports:
        location = {"physicalLocation": {"artifactLocation": {"uri": report.path}}}
        if report.error is not None:
            results.append(
                {
                    "ruleId": "unreadable",
                    "level": "error",
                    "message": {"text": report.error},
                    "locations": [location],
                }
            )
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
                    },
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
