"""One pytest session's pytest-ckpt state (syrupy's `SnapshotSession` shape): the options, the
subject (loaded once; the one source of the matrix's stages, grids, systems and report name),
the matrix report, and the snapshot extensions. Hooks and fixtures only delegate here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pytest_ckpt.plugin.options import CkptOptions
from pytest_ckpt.plugin.report import MatrixReport, failure_text
from pytest_ckpt.vocabulary import Grid

SESSION_KEY = pytest.StashKey["CkptSession"]()
CELL_PROPERTY = "ckpt_cell"  # user_properties entry of a generated item: (kind, stage, grid)


def ckpt_session(config: pytest.Config) -> CkptSession:
    return config.stash[SESSION_KEY]


class CkptSession:
    """Per-session state. Registered as a plugin while the matrix is on, to record results."""

    def __init__(self, config: pytest.Config, options: CkptOptions) -> None:
        self.config = config
        self.options = options
        self.report = MatrixReport(subject=options.subject)
        self._subject: Any = None
        self._extensions: dict[str, type] = {}

    @property
    def subject(self) -> Any:
        if self._subject is None:
            from pytest_ckpt.subject import load_subject

            try:
                self._subject = load_subject(self.options.subject)
            except ValueError as err:
                raise pytest.UsageError(f"--ckpt-subject / ckpt_subject: {err}") from None
            self.report.subject = self._subject.name
        return self._subject

    def start(self) -> None:
        """Flag on: check torch, load the subject, validate stages, keep workers' threads sane."""
        from pytest_ckpt.torch_support import check_torch

        try:
            check_torch()
        except RuntimeError as err:
            raise pytest.UsageError(str(err)) from None
        self.stages()
        if hasattr(self.config, "workerinput") and "OMP_NUM_THREADS" not in os.environ:
            # N xdist workers each running torch on every core thrash (measured 20x slower on
            # 2 cores); give each worker its share.
            import torch

            workers = int(self.config.workerinput.get("workercount", 1))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))

    def stages(self) -> tuple[str, ...]:
        reachable = tuple(self.subject.stages())
        chosen = self.options.stage_list(reachable)
        missing = [s for s in chosen if s not in reachable]
        if missing:
            raise pytest.UsageError(
                f"--ckpt-stages: subject {self.subject.name} cannot reach {', '.join(missing)} "
                f"(it reaches {', '.join(reachable)})"
            )
        return chosen

    def grids(self) -> tuple[Grid, ...]:
        return self.options.grids if self.subject.supports_grids else ((1, 1),)

    # ---- the generated matrix -----------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        cell = dict(report.user_properties).get(CELL_PROPERTY)
        if cell is not None:
            message = failure_text(report.longreprtext) if report.failed else ""
            self.report.record(tuple(cell), report.when, report.outcome, message)

    def summary_lines(self) -> list[str]:
        if not self.options.enabled or hasattr(self.config, "workerinput") or self.report.empty:
            return []
        lines = self.report.terminal_lines()
        if self.options.report:
            lines.append(f"report written to {self.options.report}")
        return lines

    def write_report(self) -> None:
        if self.options.enabled and self.options.report and not hasattr(self.config, "workerinput"):
            path = Path(self.config.invocation_params.dir, self.options.report)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.report.markdown(), encoding="utf-8")

    # ---- snapshots ----------------------------------------------------------------------

    def snapshot_extension(self, *, matrix: bool = False) -> type:
        """The syrupy extension of this session, built once. The matrix's own snapshots live
        in a folder per subject and also take the subject's `snapshot_tolerances`."""
        kind = "matrix" if matrix else "fixture"
        if kind not in self._extensions:
            from pytest_ckpt.plugin.snapshot import make_snapshot_extension, snapshot_dirname_for
            from pytest_ckpt.plugin.snapshot_compare import Tolerance, ToleranceRule

            texts = list(self.options.snapshot_tolerances)
            if matrix:
                texts += list(getattr(self.subject, "snapshot_tolerances", ()))
            try:
                rules = [ToleranceRule.parse(text) for text in texts]
            except ValueError as err:
                raise pytest.UsageError(
                    f"snapshot tolerances of {self.subject.name}: {err}"
                ) from None
            self._extensions[kind] = make_snapshot_extension(
                self.options.snapshot_floats,
                default=Tolerance(self.options.snapshot_rtol, self.options.snapshot_atol),
                rules=rules,
                dirname=snapshot_dirname_for(self.subject.name) if matrix else None,
            )
        return self._extensions[kind]
