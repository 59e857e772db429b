"""One pytest session's pytest-ckpt state (syrupy's `SnapshotSession` shape): the options, the
subject (loaded once; the one source of the matrix's stages, grids, systems and report name),
the matrix report, and the snapshot extensions. Hooks and fixtures only delegate here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_ckpt.plugin.options import CkptOptions
from pytest_ckpt.plugin.report import FULL_FAILURE_PROPERTY, MatrixReport, failure_text
from pytest_ckpt.vocabulary import Grid, grid_id

if TYPE_CHECKING:  # syrupy is imported when a snapshot is taken
    from pytest_ckpt.plugin.snapshot import CkptSnapshotExtension

SESSION_KEY = pytest.StashKey["CkptSession"]()
CELL_PROPERTY = "ckpt_cell"  # user_properties entry of a generated item: (kind, stage, grid)
FIXTURES_MODULE = "pytest_ckpt.plugin.fixtures"
MATRIX_FILE = "ckpt"  # the generated items' node ids start `ckpt::`


def ckpt_session(config: pytest.Config) -> CkptSession:
    return config.stash[SESSION_KEY]


class CkptSession:
    """Per-session state. Registered as a plugin while the matrix is on, to record results."""

    def __init__(self, config: pytest.Config, options: CkptOptions) -> None:
        self.config = config
        self.options = options
        self.report = MatrixReport(subject=options.subject, origin=options.subject)
        self._subject: Any = None
        self._stages: tuple[str, ...] | None = None
        self._grids: tuple[Grid, ...] | None = None
        self._extensions: dict[str, type[CkptSnapshotExtension]] = {}
        self.node_ids: tuple[str, ...] = ()  # `ckpt::resume[TRAINING]` arguments
        self.matrix_snapshot_names: set[str] = set()
        # tolerance patterns and the ones matched, from xdist workers
        self._worker_rules: list[str] = []
        self._worker_matched: set[str] = set()

    @property
    def subject(self) -> Any:
        if self._subject is None:
            from pytest_ckpt.subject import load_subject

            try:
                self._subject = load_subject(self.options.subject)
            except ValueError as err:
                raise pytest.UsageError(f"--ckpt-subject / ckpt_subject: {err}") from None
            self.report.subject = self._subject.name
            self.report.has_grids = bool(self._subject.supports_grids)
        return self._subject

    def start(self) -> None:
        """Flag on: check torch, the subject, its stages and grids; keep xdist workers'
        threads sane."""
        from pytest_ckpt.torch_support import check_torch

        try:
            check_torch()
        except RuntimeError as err:
            raise pytest.UsageError(str(err)) from None
        self.stages()
        self.grids()
        self.check_world_sizes()
        self.check_subject_fixture()
        self.search_project_sources()
        if hasattr(self.config, "workerinput") and "OMP_NUM_THREADS" not in os.environ:
            # N xdist workers each running torch on every core thrash (measured 20x slower on
            # 2 cores); give each worker its share.
            import torch

            workers = int(self.config.workerinput.get("workercount", 1))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))

    def search_project_sources(self) -> None:
        """Explanations that audit a saved file read the user's module sources statically:
        search the rootdir too (pytest's working directory may be elsewhere), for the session."""
        from pytest_ckpt.checks.loading import searching_project

        stack = contextlib.ExitStack()
        stack.enter_context(searching_project([self.config.rootpath]))
        self.config.add_cleanup(stack.close)

    def stages(self) -> tuple[str, ...]:
        if self._stages is None:
            reachable = tuple(self.subject.stages())
            chosen = self.options.stage_list(reachable)
            missing = [s for s in chosen if s not in reachable]
            if missing:
                raise pytest.UsageError(
                    f"--ckpt-stages: subject {self.subject.name} cannot reach "
                    f"{', '.join(missing)} (it reaches {', '.join(reachable)})"
                )
            self._stages = chosen
        return self._stages

    def stages_line(self) -> str:
        """Which stages were tested, and which the subject has that were not."""
        tested = self.stages()
        untested = [stage for stage in self.subject.stages() if stage not in tested]
        line = f"stages tested: {', '.join(tested)}"
        if untested:
            line += (
                f"; not tested: {', '.join(untested)} (--ckpt-stages all, or a list, tests "
                f"{'it' if len(untested) == 1 else 'them'})"
            )
        return line

    def grids(self) -> tuple[Grid, ...]:
        """The grids to build on: the chosen ones, each checked by the subject's `check_grid`
        (a usage error naming the grid and the subject's reason), or the single (1, 1) of a
        subject without slot grids, for which choosing grids is a usage error."""
        if self._grids is None:
            subject, chosen = self.subject, self.options.grids
            if not subject.supports_grids:
                if self.options.grids_chosen and chosen != ((1, 1),):
                    raise pytest.UsageError(
                        f"--ckpt-grids / ckpt_grids: subject {subject.name} has no slot grids "
                        "(supports_grids is False), so it is tested once per stage: remove "
                        "the grids option"
                    )
                chosen = ((1, 1),)
            elif callable(getattr(subject, "check_grid", None)):
                for grid in chosen:
                    try:
                        subject.check_grid(grid)
                    except ValueError as err:
                        raise pytest.UsageError(
                            f"--ckpt-grids / ckpt_grids: subject {subject.name} cannot be "
                            f"built on {grid_id(grid)}: {err}"
                        ) from None
            self._grids = chosen
        return self._grids

    def cell_id(self, stage: str, grid: Grid) -> str:
        """`BLENDING-2x2`, or just `WARMUP` for a subject without slot grids."""
        return f"{stage}-{grid_id(grid)}" if self.subject.supports_grids else stage

    def grid_label(self, grid: Grid) -> str:
        return grid_id(grid) if self.subject.supports_grids else ""

    def check_subject_fixture(
        self, session: pytest.Session | None = None, items: Sequence[pytest.Item] = ()
    ) -> None:
        """With the matrix on, overriding the `ckpt_subject` fixture is a usage error.

        The matrix's stages and grids are decided when tests are collected, before any fixture
        runs (and a fixture may need others that exist only then), so the matrix cannot test
        a fixture's subject; honouring the override for the project's own tests only would
        test two subjects under one name. One source: the `ckpt_subject` option, which the
        fixture returns.

        Checked twice: at configure time over the conftest files pytest has loaded (the
        project's own; under xdist this is the controller, where a usage error reads as one),
        and after collection over the definitions visible to each item (conftests further
        down the tree).
        """
        found = [_where(func, self.config.rootpath) for func in _conftest_overrides(self.config)]
        if session is not None:
            manager = session._fixturemanager
            parents: set[int] = set()
            for item in items:
                if id(item.parent) in parents:
                    continue
                parents.add(id(item.parent))
                for fixturedef in _visible_fixturedefs(manager, "ckpt_subject", item):
                    if fixturedef.func.__module__ != FIXTURES_MODULE:
                        found.append(_where(fixturedef.func, session.config.rootpath))
        if found:
            raise pytest.UsageError(
                f"{found[0]} overrides the ckpt_subject fixture, but the --ckpt-roundtrip matrix "
                f"takes its subject from the ckpt_subject option (now {self.options.subject}): "
                "it is chosen when tests are collected, before fixtures run. Point "
                'ckpt_subject = "package.module:factory" (ini) or --ckpt-subject at a factory '
                "of your subject and remove the fixture; the ckpt_subject fixture then returns "
                "that subject"
            )

    def check_world_sizes(self) -> None:
        if not self.options.world_sizes:
            return
        from pytest_ckpt.distributed.world_size import supports_world_size_check

        if not supports_world_size_check(self.subject):
            raise pytest.UsageError(
                f"--ckpt-world-sizes: subject {self.subject.name} has no distributed build: "
                "give it build_distributed() (pytest_ckpt.distributed.protocol), or test a "
                "ModuleSubject, which has one"
            )

    # ---- the generated matrix -----------------------------------------------------------

    def take_node_id_args(self) -> None:
        """`pytest --ckpt-roundtrip "ckpt::resume[TRAINING]"` reruns the item the summary named.

        No file `ckpt` exists, so pytest would stop at "file or directory not found": such
        arguments (`ckpt`, `ckpt::resume`, `ckpt::resume[TRAINING]`) are taken out of the paths
        to collect and select among the generated items instead (`select_node_ids`)."""
        if Path(self.config.invocation_params.dir, MATRIX_FILE).exists():
            return
        ids = [arg for arg in self.config.args if _names_matrix_item(str(arg))]
        if ids and not self.options.enabled:
            raise pytest.UsageError(
                f"{ids[0]} is a test that --ckpt-roundtrip generates: add --ckpt-roundtrip"
            )
        self.config.args[:] = [arg for arg in self.config.args if arg not in ids]
        self.node_ids = tuple(ids)

    def select_node_ids(self, items: list[pytest.Item]) -> None:
        """Keep the generated items named on the command line (and everything else collected
        from the other arguments); report the rest as deselected."""
        if not self.node_ids:
            return
        kept: list[pytest.Item] = []
        dropped: list[pytest.Item] = []
        for item in items:
            generated = any(key == CELL_PROPERTY for key, _ in item.user_properties)
            chosen = any(_selects(arg, item.nodeid) for arg in self.node_ids)
            (dropped if generated and not chosen else kept).append(item)
        if dropped:
            self.config.hook.pytest_deselected(items=dropped)
            items[:] = kept

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = dict(report.user_properties)
        cell = properties.get(CELL_PROPERTY)
        if isinstance(cell, (tuple, list)):  # (subject, stage, grid); a list through xdist
            message = ""
            if report.failed:  # the whole message when ckpt_check kept it: nothing cut
                full = properties.get(FULL_FAILURE_PROPERTY)
                message = (
                    full if isinstance(full, str) and full else failure_text(report.longreprtext)
                )
            subject, stage, grid = (str(part) for part in cell)
            self.report.record(
                (subject, stage, grid), report.when, report.outcome, message, nodeid=report.nodeid
            )

    def summary_lines(self) -> list[str]:
        if not self.options.enabled or hasattr(self.config, "workerinput") or self.report.empty:
            return []
        lines = self.report.terminal_lines()
        lines.append(self.stages_line())
        if self.options.report:
            lines.append(f"report written to {self.options.report}")
        return lines

    def unmatched_patterns(self) -> list[str]:
        """Tolerance patterns no value of this run's snapshots matched (a typo, or a path that
        moved); none before a snapshot was taken. Under xdist the controller holds what its
        workers sent (`add_pattern_usage`)."""
        rules, matched = self.pattern_usage()
        return [pattern for pattern in rules if pattern not in matched]

    def pattern_usage(self) -> tuple[list[str], set[str]]:
        rules: dict[str, None] = dict.fromkeys(self._worker_rules)
        matched = set(self._worker_matched)
        for extension in self._extensions.values():
            rules.update(dict.fromkeys(rule.pattern for rule in extension.tolerances.rules))
            matched |= extension.matched_patterns
        return list(rules), matched

    def add_pattern_usage(self, usage: dict[str, list[str]]) -> None:
        self._worker_rules.extend(usage.get("rules", ()))
        self._worker_matched.update(usage.get("matched", ()))

    def write_report(self) -> None:
        if self.options.enabled and self.options.report and not hasattr(self.config, "workerinput"):
            path = Path(self.config.invocation_params.dir, self.options.report)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.report.markdown(), encoding="utf-8")

    # ---- snapshots ----------------------------------------------------------------------

    def snapshot_extension(self, *, matrix: bool = False) -> type[CkptSnapshotExtension]:
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
                judged_names=self.matrix_snapshot_names if matrix else None,
            )
        return self._extensions[kind]


def _names_matrix_item(arg: str) -> bool:
    return arg == MATRIX_FILE or arg.startswith(f"{MATRIX_FILE}::")


def _selects(arg: str, nodeid: str) -> bool:
    """`ckpt` selects every generated item, `ckpt::resume` each resume, a full id its item."""
    return arg == MATRIX_FILE or nodeid == arg or nodeid.startswith(f"{arg}[")


def _conftest_overrides(config: pytest.Config) -> list[Any]:
    """The `ckpt_subject` fixture functions defined in the conftest files loaded so far."""
    overrides = []
    for plugin in config.pluginmanager.get_plugins():
        if Path(getattr(plugin, "__file__", None) or "x").name != "conftest.py":
            continue
        fixture = getattr(plugin, "ckpt_subject", None)
        func = getattr(fixture, "_fixture_function", fixture)  # pytest 9 wraps the function
        is_fixture = hasattr(fixture, "_fixture_function_marker") or hasattr(
            fixture,
            "_pytestfixturefunction",  # pytest 8
        )
        if is_fixture and getattr(func, "__module__", FIXTURES_MODULE) != FIXTURES_MODULE:
            overrides.append(func)
    return overrides


def _visible_fixturedefs(manager: Any, name: str, item: pytest.Item) -> Sequence[Any]:
    try:
        return manager.getfixturedefs(name, item) or ()
    except (TypeError, AttributeError):  # pytest 8.0 took the node id
        return manager.getfixturedefs(name, item.nodeid) or ()


def _where(func: Any, rootpath: Path) -> str:
    """`conftest.py:12` for a fixture function, relative to the rootdir when inside it."""
    code = getattr(func, "__code__", None)
    if code is None:
        return f"the fixture {getattr(func, '__qualname__', func)!r}"
    path = Path(code.co_filename)
    with contextlib.suppress(ValueError):
        path = path.relative_to(rootpath)
    return f"{path.as_posix()}:{code.co_firstlineno}"
