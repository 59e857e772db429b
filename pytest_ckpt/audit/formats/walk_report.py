"""What `pytest-ckpt audit PATH...` prints for what `walk.audit_target` found: the file
renderers' lines for each audited file (`render`), plus, for a folder, the layouts it
recognised, a line per skipped file and a total line; SARIF gains the list of every file
looked at, so a folder's clean and skipped files are in the report too.

Where a layout says which framework loader reads a file (`framework_loaders`), its verdict
is printed beside the plain `torch.load(weights_only=True)` one, and by default it decides
the exit status (`exit_status`; `strict=True`: both must pass). A reader that runs whatever
the file holds (SB3's `VecNormalize.load`) gets that verdict instead of allowlist advice."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence

from pytest_ckpt.audit import Report
from pytest_ckpt.audit.escape import escape
from pytest_ckpt.audit.formats.framework_loaders import (
    LOADS,
    NOT_READ,
    PLAIN,
    RUNS_CODE,
    FrameworkVerdict,
)
from pytest_ckpt.audit.formats.walk import DCP, SKIPPED, TargetAudit
from pytest_ckpt.audit.render import artifact_uri, json_entries, render_sarif, render_text

# Per-file verdicts (`file_verdict`), the keys of the JSON total's "by_verdict".
OK_FOR_FRAMEWORK = "ok for its framework's loader"
NOT_READ_ON_RESUME = "not read on resume"
CODE_RUNS = "runs code when its framework reads it"
REFUSED = "refused"


def render_targets_text(targets: Sequence[TargetAudit], *, strict: bool = False) -> str:
    return "\n".join(line for target in targets for line in _target_lines(target, strict))


def _target_lines(target: TargetAudit, strict: bool) -> list[str]:
    """A folder's layout is announced just before the first of its files."""
    unannounced = {folder: name for folder, name in target.layouts if name != DCP}
    lines = []
    for report in target.reports:
        folder = os.path.dirname(report.path)
        name = unannounced.pop(folder, None)
        if name is not None:
            lines.append(f"{escape(folder or '.')}/: {name}")
        framework = target.framework.get(report.path)
        if report.format == SKIPPED:
            lines.append(f"{escape(report.path)}: skipped: {escape(report.summary or '')}")
        elif framework is not None and framework.verdict == RUNS_CODE:
            lines += _runs_code_lines(report, framework)
        else:
            lines.append(render_text([report]))
            lines += _framework_lines(report, framework, strict)
    if target.folder:
        lines.append(total_line(target, strict=strict))
    return lines


def _framework_lines(report: Report, framework: FrameworkVerdict | None, strict: bool) -> list[str]:
    """The framework loader's verdict under the plain one (nothing where both say ok)."""
    if framework is None or (report.loadable and framework.verdict == LOADS):
        return []
    reader = framework.reader
    fails = "--strict fails on it" if not strict else "--strict: it fails the audit"
    if framework.verdict == NOT_READ:
        plain = "" if report.loadable else f"; plain weights_only=True refuses it (above): {fails}"
        return [f"  framework: not read by {reader.framework} on resume ({reader.note}){plain}"]
    if reader.how == PLAIN:
        return [
            f"  framework: {reader.framework} reads it with plain torch.load(weights_only=True) "
            f"too ({reader.call}): resume fails on it"
        ]
    assert framework.allowlist is not None
    its = (
        f"{reader.call}; its allowlist: {', '.join(framework.allowlist.names)}; "
        f"{framework.allowlist.source}"
    )
    if framework.verdict == LOADS:
        lines = [
            f"  framework: ok for {reader.framework} ({its}); plain weights_only=True refuses "
            f"it (above): {fails}"
        ]
        return lines + [f"  framework note: {escape(note)}" for note in framework.notes]
    refusal = escape(framework.remaining)
    lines = [f"  framework: {reader.framework} refuses it too ({its}): {refusal}"]
    return lines + ([f"  framework note: {reader.note}"] if reader.note else [])


def _runs_code_lines(report: Report, framework: FrameworkVerdict) -> list[str]:
    """A reader with no allowlist at all: what the file names is what would run, and
    advice about torch's allowlist would be beside the point."""
    reader = framework.reader
    named = sorted({escape(f.global_name) for f in report.findings if f.global_name})
    lines = [
        f"{escape(report.path)}: anything in it runs when {reader.framework} reads it "
        f"({reader.call}): no allowlist applies"
    ]
    if named:
        lines.append(f"  it imports and may call: {', '.join(named)}")
    lines.append(
        "  Fix: load it only from a source you trust; where you write the saving code, keep "
        "this state as tensors and plain containers in a torch.save file instead"
    )
    return lines + [f"  note: {escape(note)}" for note in report.notes]


def file_verdict(report: Report, framework: FrameworkVerdict | None) -> str:
    """ "skipped", "unreadable", "ok", OK_FOR_FRAMEWORK, NOT_READ_ON_RESUME, CODE_RUNS or
    REFUSED."""
    if report.format == SKIPPED:
        return SKIPPED
    if report.error is not None:
        return "unreadable"
    if framework is not None and framework.verdict == RUNS_CODE:
        return CODE_RUNS
    if report.loadable:
        return "ok"
    if framework is not None and framework.verdict == NOT_READ:
        return NOT_READ_ON_RESUME
    if framework is not None and framework.verdict == LOADS:
        return OK_FOR_FRAMEWORK
    return REFUSED


def fails(report: Report, framework: FrameworkVerdict | None, *, strict: bool) -> bool:
    """Does this (readable) file fail the audit? By default the framework loader's verdict
    decides where there is one; under `strict`, plain weights_only=True must pass too."""
    framework_fails = framework is not None and not framework.passes
    if strict or framework is None:
        return bool(report.findings) or framework_fails
    return framework_fails


def exit_status(targets: Sequence[TargetAudit], *, strict: bool = False) -> int:
    """2 if a file is unreadable, 1 if one fails (`fails`), else 0."""
    pairs = [(r, t.framework.get(r.path)) for t in targets for r in t.reports]
    if any(report.error is not None for report, _ in pairs):
        return 2
    return 1 if any(fails(r, f, strict=strict) for r, f in pairs) else 0


def total_line(target: TargetAudit, *, strict: bool = False) -> str:
    """`total: N file(s) in PATH: a ok, b with findings, c unreadable, d skipped`, then what
    the framework loaders say of the files with findings."""
    reports = target.reports
    skipped = sum(r.format == SKIPPED for r in reports)
    unreadable = sum(r.error is not None for r in reports)
    unsafe = sum(r.error is None and bool(r.findings) for r in reports)
    ok = len(reports) - skipped - unreadable - unsafe
    line = (
        f"total: {len(reports)} file(s) in {escape(target.path)}: {ok} ok, {unsafe} with findings, "
        f"{unreadable} unreadable, {skipped} skipped"
    )
    counts = Counter(file_verdict(r, target.framework.get(r.path)) for r in reports)
    passing = counts[OK_FOR_FRAMEWORK] + counts[NOT_READ_ON_RESUME]
    if passing:
        line += (
            f"; of those with findings, {counts[OK_FOR_FRAMEWORK]} load with their framework's "
            f"allowlist, {counts[NOT_READ_ON_RESUME]} not read on resume: "
            + ("--strict fails them" if strict else "they pass (--strict fails them)")
        )
    if counts[CODE_RUNS]:
        line += f"; {counts[CODE_RUNS]} run(s) code when their framework reads them"
    return line


def render_targets_json(targets: Sequence[TargetAudit], *, strict: bool = False) -> str:
    """Every file (its plain verdict, its folder's layout, its framework loader's verdict,
    whether it fails) and, per PATH and for the whole run, the layouts and a total."""
    per_target = [_file_entries(target, strict) for target in targets]
    summary = [
        {
            "path": target.path,
            "folder": target.folder,
            "layouts": [{"folder": folder, "layout": name} for folder, name in target.layouts],
            "total": _total(entries),
        }
        for target, entries in zip(targets, per_target, strict=True)
    ]
    files = [entry for entries in per_target for entry in entries]
    return json.dumps(
        {"strict": strict, "files": files, "targets": summary, "total": _total(files)}, indent=2
    )


def _file_entries(target: TargetAudit, strict: bool) -> list[dict]:
    layouts = dict(target.layouts)
    entries = json_entries(target.reports)
    for entry, report in zip(entries, target.reports, strict=True):
        framework = target.framework.get(report.path)
        entry["layout"] = layouts.get(os.path.dirname(report.path))
        entry["framework"] = _framework_json(framework)
        entry["verdict"] = file_verdict(report, framework)
        entry["fails"] = report.error is None and fails(report, framework, strict=strict)
    return entries


def _framework_json(framework: FrameworkVerdict | None) -> dict | None:
    if framework is None:
        return None
    reader, allowlist = framework.reader, framework.allowlist
    return {
        "framework": reader.framework,
        "call": reader.call,
        "reads": reader.how,
        "verdict": framework.verdict,
        "allowlist": None if allowlist is None else list(allowlist.names),
        "allowlist_source": None if allowlist is None else allowlist.source,
        "refusal": framework.remaining or None,
        "notes": [*framework.notes, *([reader.note] if reader.note else [])],
    }


def _total(entries: Sequence[dict]) -> dict:
    """files, ok (passing), refused (failing with findings), unreadable, skipped, by verdict."""
    verdicts = Counter(entry["verdict"] for entry in entries)
    unreadable, skipped = verdicts["unreadable"], verdicts[SKIPPED]
    refused = sum(entry["fails"] for entry in entries)
    return {
        "files": len(entries),
        "ok": len(entries) - refused - unreadable - skipped,
        "refused": refused,
        "unreadable": unreadable,
        "skipped": skipped,
        "by_verdict": dict(sorted(verdicts.items())),
    }


def render_targets_sarif(targets: Sequence[TargetAudit], *, strict: bool = False) -> str:
    """The SARIF log of every file, its levels set by what decides the exit status: a
    finding is an error where the file fails (`fails`), a warning where only plain
    weights_only=True refuses it (its framework's loader reads it, or never does); a file
    its framework reads with code running gets an error of its own. `runs[0].artifacts`
    names every file looked at with its verdict (SARIF results name only files with
    problems)."""
    reports = [report for target in targets for report in target.reports]
    judged = {
        artifact_uri(r.path): (r, t.framework.get(r.path)) for t in targets for r in t.reports
    }
    sarif = json.loads(render_sarif(reports))
    run = sarif["runs"][0]
    for result in run["results"]:
        uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        report, framework = judged[uri]
        if framework is None or result["ruleId"] in ("unreadable", "findings-omitted"):
            continue
        result["level"] = "error" if fails(report, framework, strict=strict) else "warning"
        result["properties"]["frameworkVerdict"] = file_verdict(report, framework)
    run["results"] += [
        _runs_code_result(uri, framework)
        for uri, (_, framework) in judged.items()
        if framework is not None and framework.verdict == RUNS_CODE
    ]
    run["artifacts"] = [
        {"location": {"uri": uri}, "properties": _artifact_properties(report, framework)}
        for uri, (report, framework) in judged.items()
    ]
    return json.dumps(sarif, indent=2)


def _runs_code_result(uri: str, framework: FrameworkVerdict) -> dict:
    reader = framework.reader
    return {
        "ruleId": "runs-code-when-read",
        "level": "error",
        "message": {
            "text": f"anything in it runs when {reader.framework} reads it ({reader.call}): "
            "no allowlist applies. Fix: load it only from a source you trust"
        },
        "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri}}}],
    }


def _artifact_properties(report: Report, framework: FrameworkVerdict | None) -> dict:
    """The file's format and plain verdict (`verdict`), and its framework loader's."""
    properties = {"format": report.format, "verdict": verdict(report)}
    if framework is not None:
        properties["frameworkVerdict"] = file_verdict(report, framework)
    return properties


def verdict(report: Report) -> str:
    """ "skipped", "unreadable", "findings" or "ok"."""
    if report.format == SKIPPED:
        return SKIPPED
    if report.error is not None:
        return "unreadable"
    return "findings" if report.findings else "ok"
