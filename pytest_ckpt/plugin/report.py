"""The matrix report: a terminal table and a markdown file fit to paste in a PR comment.

Results are recorded by cell (kind, stage, grid), which each generated item carries in its
`user_properties`: they travel with its reports to the xdist controller, so the table is
complete under `-n 2`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KINDS = ("roundtrip", "resume", "snapshot")
_MARKS = {"passed": "ok", "failed": "FAIL", "skipped": "skip"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def failure_text(text: str, max_lines: int = 40) -> str:
    """The failure as a person needs it in a report: no xdist worker banner, bounded length."""
    lines = [line for line in text.splitlines() if not line.startswith("[gw")]
    while lines and not lines[0].strip():
        lines.pop(0)
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], f"... ({len(lines) - max_lines} more lines)"]
    return "\n".join(lines)


@dataclass(slots=True)
class MatrixReport:
    """Outcomes by cell. A subject without slot grids has one column, and cells named by
    stage only (`roundtrip[WARMUP]`); `origin` is the `ckpt_subject` spec it was loaded from."""

    subject: str = ""
    origin: str = ""
    has_grids: bool = True
    outcomes: dict[tuple[str, str, str], str] = field(default_factory=dict)
    messages: dict[tuple[str, str, str], str] = field(default_factory=dict)
    stage_order: list[str] = field(default_factory=list)
    grid_order: list[str] = field(default_factory=list)

    def record(self, cell: tuple[str, str, str], when: str, outcome: str, message: str) -> None:
        """Keep the first failing phase, else the call phase's outcome."""
        _kind, stage, grid = key = cell
        if stage not in self.stage_order:
            self.stage_order.append(stage)
        if grid not in self.grid_order:
            self.grid_order.append(grid)
        if self.outcomes.get(key) == "failed":
            return
        if outcome == "failed" or when == "call" or (when == "setup" and outcome == "skipped"):
            self.outcomes[key] = outcome
            if outcome == "failed":
                self.messages[key] = strip_ansi(message)

    @property
    def empty(self) -> bool:
        return not self.outcomes

    def _cell(self, stage: str, grid: str) -> str:
        return "/".join(_MARKS.get(self.outcomes.get((k, stage, grid), ""), "--") for k in KINDS)

    def rows(self) -> list[list[str]]:
        if not self.has_grids:
            header = ["stage", "/".join(KINDS)]
            return [header] + [[stage, self._cell(stage, "")] for stage in self.stage_order]
        header = ["stage \\ grid", *self.grid_order]
        return [header] + [
            [stage] + [self._cell(stage, grid) for grid in self.grid_order]
            for stage in self.stage_order
        ]

    def failures(self) -> list[tuple[str, str]]:
        return [
            (f"ckpt::{kind}[{stage}-{grid}]" if grid else f"ckpt::{kind}[{stage}]", message)
            for (kind, stage, grid), message in self.messages.items()
        ]

    @property
    def subject_label(self) -> str:
        """`reference-cnn (pytest_ckpt.reference.subject:ReferenceSubject)`: the subject
        tested, and where it came from."""
        if self.origin and self.origin != self.subject:
            return f"{self.subject} ({self.origin})"
        return self.subject

    def terminal_lines(self) -> list[str]:
        rows = self.rows()
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        cells = f"each cell: {'/'.join(KINDS)}" if self.has_grids else "no slot grids"
        lines = [f"subject {self.subject_label}; {cells}"]
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
        ]
        return lines

    def markdown(self) -> str:
        rows = self.rows()
        passed = sum(1 for o in self.outcomes.values() if o == "passed")
        lines = [
            "## pytest-ckpt: checkpoint round-trip matrix",
            "",
            f"Subject `{self.subject_label}`; `torch.load(weights_only=True)`, no allowlist. "
            f"{passed}/{len(self.outcomes)} checks passed. Each cell: {' / '.join(KINDS)}.",
            "",
            "| " + " | ".join(rows[0]) + " |",
            "|" + "---|" * len(rows[0]),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        failures = self.failures()
        if failures:
            lines += ["", "### Failures", ""]
            for nodeid, message in failures:
                lines += [f"**`{nodeid}`**", "", "```", message.strip(), "```", ""]
        return "\n".join(lines).rstrip() + "\n"
