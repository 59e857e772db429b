"""A `DiffResult` as text (a terminal), JSON (a program) or Markdown (a PR comment). Keys and
values come from the files: control characters are escaped in text and Markdown, and Markdown
table syntax in them is neutralised."""

from __future__ import annotations

import json
import math

from pytest_ckpt.audit.escape import escape
from pytest_ckpt.diff import Change, DiffResult


def _what(change: Change) -> str:
    if change.kind == "values":
        share = f"{change.beyond}/{change.elements}"
        return f"{share} elements differ, max abs diff {change.max_abs:.6g} ({change.before})"
    return f"{change.kind} {change.before} -> {change.after}"


def _header(result: DiffResult) -> str:
    tolerance = f"rtol={result.rtol:g}, atol={result.atol:g}"
    return (
        f"{escape(result.a)} ({result.a_format}) vs {escape(result.b)} ({result.b_format}), "
        f"{tolerance}"
    )


def _verdict(result: DiffResult) -> str:
    if result.equal:
        return f"equal: {result.compared} keys"
    return (
        f"different: {len(result.removed)} removed, {len(result.added)} added, "
        f"{len(result.changed)} changed of {result.compared} keys in both"
    )


def render_text(result: DiffResult) -> str:
    lines = [_header(result)]
    lines += [f"  - {escape(key)}" for key in result.removed]
    lines += [f"  + {escape(key)}" for key in result.added]
    lines += [f"  ~ {escape(change.key)}: {escape(_what(change))}" for change in result.changed]
    lines.append(_verdict(result))
    return "\n".join(lines)


def render_json(result: DiffResult) -> str:
    return json.dumps(
        {
            "a": {"path": result.a, "format": result.a_format},
            "b": {"path": result.b, "format": result.b_format},
            "rtol": result.rtol,
            "atol": result.atol,
            "equal": result.equal,
            "compared": result.compared,
            "removed": result.removed,
            "added": result.added,
            "changed": [
                {
                    "key": c.key,
                    "kind": c.kind,
                    "before": c.before,
                    "after": c.after,
                    "beyond": c.beyond,
                    "elements": c.elements,
                    "max_abs": _json_number(c.max_abs),
                }
                for c in result.changed
            ],
        },
        indent=2,
    )


def _json_number(value: float | None) -> float | str | None:
    """JSON has no NaN or infinity: those are given as the strings "nan", "inf", "-inf"."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _cell(text: str) -> str:
    """A Markdown table cell: escaped, `|` and backticks made literal, one line."""
    return escape(text).replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")


def render_markdown(result: DiffResult) -> str:
    lines = [f"**pytest-ckpt diff**: {_cell(_header(result))}", "", f"**{_verdict(result)}**"]
    rows = [(key, "removed", "") for key in result.removed]
    rows += [(key, "added", "") for key in result.added]
    rows += [(c.key, c.kind, _what(c)) for c in result.changed]
    if rows:
        lines += ["", "| key | change | detail |", "| --- | --- | --- |"]
        lines += [f"| {_cell(k)} | {kind} | {_cell(detail)} |" for k, kind, detail in rows]
    return "\n".join(lines)
