"""The matrix report: a terminal table and a markdown file fit to paste in a PR comment.

Results are recorded by cell (kind, stage, grid), which each generated item carries in its
`user_properties`: they travel with its reports to the xdist controller, so the table is
complete under `-n 2`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_ckpt.errors import CheckpointError

KINDS = ("roundtrip", "resume", "snapshot")
WORLD_SIZE = "world_size "
_MARKS = {"passed": "ok", "failed": "FAIL", "skipped": "skip"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
SHOWN_ITEMS = 12  # lines of a failure's list shown in the terminal without -v
FULL_FAILURE_PROPERTY = "ckpt_failure"  # user_properties entry: the whole failure message


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def shortened(err: CheckpointError, *, verbose: bool, report: str | None) -> str:
    """The error's message with its list cut to `SHOWN_ITEMS` lines, saying how many more
    and where all of them are: the `--ckpt-report` report and a run with `-v`."""
    if verbose or len(err.items) <= SHOWN_ITEMS:
        return str(err)
    where = f"all in {report} and with -v" if report else "run with -v or --ckpt-report=PATH"
    more = f"  ... and {len(err.items) - SHOWN_ITEMS} more ({where})"
    return "\n".join([err.head, *(f"  {item}" for item in err.items[:SHOWN_ITEMS]), more])


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
    pair_order: list[str] = field(default_factory=list)  # world-size pairs, `2:1`
    nodeids: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def record(
        self,
        cell: tuple[str, str, str],
        when: str,
        outcome: str,
        message: str,
        *,
        nodeid: str | None = None,
    ) -> None:
        """Keep the first failing phase, else the call phase's outcome. A world-size cell's
        kind is `world_size 2:1`."""
        kind, stage, grid = key = cell
        if nodeid is not None:
            self.nodeids[key] = nodeid
        if kind.startswith(WORLD_SIZE) and kind[len(WORLD_SIZE) :] not in self.pair_order:
            self.pair_order.append(kind[len(WORLD_SIZE) :])
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

    def world_size_rows(self) -> list[list[str]]:
        """The world-size checks, one cell per stage x grid: `2:1 ok, 1:2 FAIL`."""
        if not self.pair_order:
            return []

        def cell(stage: str, grid: str) -> str:
            outcomes = (
                self.outcomes.get((WORLD_SIZE + p, stage, grid), "") for p in self.pair_order
            )
            marks = (_MARKS.get(outcome, "--") for outcome in outcomes)
            return ", ".join(
                f"{pair} {mark}" for pair, mark in zip(self.pair_order, marks, strict=True)
            )

        grids = self.grid_order if self.has_grids else [""]
        header = ["stage \\ grid", *grids] if self.has_grids else ["stage", "save:load"]
        return [header] + [
            [stage] + [cell(stage, grid) for grid in grids] for stage in self.stage_order
        ]

    def failures(self) -> list[tuple[str, str]]:
        return [
            (self.nodeids.get(key) or _nodeid(*key), message)
            for key, message in self.messages.items()
        ]

    @property
    def subject_label(self) -> str:
        """`reference-cnn (pytest_ckpt.reference.subject:ReferenceSubject)`: the subject
        tested, and where it came from."""
        if self.origin and self.origin != self.subject:
            return f"{self.subject} ({self.origin})"
        return self.subject

    def terminal_lines(self) -> list[str]:
        cells = f"each cell: {'/'.join(KINDS)}" if self.has_grids else "no slot grids"
        lines = [f"subject {self.subject_label}; {cells}", *_aligned(self.rows())]
        if self.pair_order:
            lines += [
                "resume across world sizes (save:load ranks):",
                *_aligned(self.world_size_rows()),
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
        world = self.world_size_rows()
        if world:
            lines += ["", "Resume across world sizes (save:load ranks):", ""]
            lines += ["| " + " | ".join(world[0]) + " |", "|" + "---|" * len(world[0])]
            lines += ["| " + " | ".join(row) + " |" for row in world[1:]]
        failures = self.failures()
        if failures:
            lines += ["", "### Failures", ""]
            for nodeid, message in failures:
                lines += [f"**`{nodeid}`**", "", "```", message.strip(), "```", ""]
        return "\n".join(lines).rstrip() + "\n"


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _nodeid(kind: str, stage: str, grid: str) -> str:
    cell = f"{stage}-{grid}" if grid else stage
    if kind.startswith(WORLD_SIZE):
        return f"ckpt::world_size[{cell}-{kind[len(WORLD_SIZE) :]}]"
    return f"ckpt::{kind}[{cell}]"
