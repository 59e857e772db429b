"""pytest glue: options, the generated matrix, fixtures, and the summary. Thin on purpose.

Nothing heavy is imported at module level: with `--ckpt-roundtrip` off, installing the plugin
costs an option group and a few fixture definitions, and never `import torch`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_ckpt.options import CkptOptions, add_options, grid_id, resolve_options
from pytest_ckpt.report import MatrixReport

OPTIONS_KEY = pytest.StashKey[CkptOptions]()
SESSION_KEY = pytest.StashKey["CkptSession"]()


class CkptSession:
    """Per-session state: options, the subject (loaded once), the report, the extension."""

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

    def grids(self) -> tuple[tuple[int, int], ...]:
        return self.options.grids if self.subject.supports_grids else ((1, 1),)

    def snapshot_extension(self, *, matrix: bool = False) -> type:
        """The syrupy extension of this session, built once. The matrix's own snapshots live
        in a folder per subject and also take the subject's `snapshot_tolerances`."""
        kind = "matrix" if matrix else "fixture"
        if kind not in self._extensions:
            from pytest_ckpt.snapshot import make_snapshot_extension, snapshot_dirname_for
            from pytest_ckpt.snapshot_compare import Tolerance, ToleranceRule

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


class GeneratedModule(pytest.Module):
    """The `ckpt` collector: test functions from pytest_ckpt.generated, ids `ckpt::...`."""

    def _getobj(self):
        return importlib.import_module("pytest_ckpt.generated")

    def funcnamefilter(self, name: str) -> bool:
        from pytest_ckpt.generated import GENERATED_TESTS

        return name in GENERATED_TESTS

    def classnamefilter(self, name: str) -> bool:
        return False


def _session(config: pytest.Config) -> CkptSession:
    return config.stash[SESSION_KEY]


def matrix_snapshot_extension(config: pytest.Config) -> type:
    """The extension the generated `snapshot` items compare with (a folder per subject)."""
    return _session(config).snapshot_extension(matrix=True)


# ---- hooks ----------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    options = resolve_options(config)
    config.stash[OPTIONS_KEY] = options
    config.stash[SESSION_KEY] = CkptSession(config, options)
    if options.enabled:
        _session(config).start()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items) -> None:
    """Append the generated matrix before -k/-m/--deselect filter the items."""
    if config.stash[OPTIONS_KEY].enabled:
        module = GeneratedModule.from_parent(session, path=Path(config.rootpath, "ckpt"))
        items.extend(session.genitems(module))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `ckpt_stage` then `ckpt_grid`, so ids read `BLENDING-2x2`."""
    names = metafunc.fixturenames
    if "ckpt_stage" not in names and "ckpt_grid" not in names:
        return
    ckpt = _session(metafunc.config)
    if "ckpt_stage" in names:
        metafunc.parametrize("ckpt_stage", ckpt.stages(), ids=str)
    if "ckpt_grid" in names:
        metafunc.parametrize("ckpt_grid", ckpt.grids(), ids=grid_id)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    ckpt = _session(session.config)
    if ckpt.options.enabled:
        session.config.pluginmanager.register(_ReportRecorder(ckpt.report), "ckpt-report-recorder")


class _ReportRecorder:
    def __init__(self, report: MatrixReport) -> None:
        self.report = report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        message = _failure_text(report.longreprtext) if report.failed else ""
        self.report.record(report.nodeid, report.when, report.outcome, message)


def _failure_text(text: str, max_lines: int = 40) -> str:
    """The failure as a person needs it in a report: no xdist worker banner, bounded length."""
    lines = [line for line in text.splitlines() if not line.startswith("[gw")]
    while lines and not lines[0].strip():
        lines.pop(0)
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], f"... ({len(lines) - max_lines} more lines)"]
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    ckpt = _session(config)
    if not ckpt.options.enabled or hasattr(config, "workerinput") or ckpt.report.empty:
        return
    terminalreporter.write_sep("=", "pytest-ckpt matrix")
    for line in ckpt.report.terminal_lines():
        terminalreporter.write_line(line)
    if ckpt.options.report:
        terminalreporter.write_line(f"report written to {ckpt.options.report}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    ckpt = _session(session.config)
    if not ckpt.options.enabled or hasattr(session.config, "workerinput"):
        return
    if ckpt.options.report:
        path = Path(session.config.invocation_params.dir, ckpt.options.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(ckpt.report.markdown(), encoding="utf-8")


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ckpt_options(pytestconfig: pytest.Config) -> CkptOptions:
    """The resolved `--ckpt-*` options."""
    return pytestconfig.stash[OPTIONS_KEY]


@pytest.fixture(scope="session")
def ckpt_subject(pytestconfig: pytest.Config) -> Any:
    """The subject under test (`--ckpt-subject`); override this fixture to supply your own."""
    return _session(pytestconfig).subject


@pytest.fixture
def ckpt_stage(request: pytest.FixtureRequest) -> str:
    """The seed stage of this test (parametrized from --ckpt-stages)."""
    return request.param


@pytest.fixture
def ckpt_grid(request: pytest.FixtureRequest) -> tuple[int, int]:
    """The slot grid (rows, cols) of this test (parametrized from --ckpt-grids)."""
    return request.param


@pytest.fixture
def ckpt_model(ckpt_subject: Any, ckpt_stage: str, ckpt_grid: tuple[int, int]) -> Any:
    """A live system of the subject at `ckpt_stage` on `ckpt_grid` (seed 0)."""
    return ckpt_subject.build(grid=ckpt_grid, stage=ckpt_stage, seed=0)


@pytest.fixture
def ckpt_check() -> Callable[[], contextlib.AbstractContextManager[None]]:
    """Turn a CheckpointError into a test failure showing only its message (no traceback)."""
    from pytest_ckpt.errors import CheckpointError

    @contextlib.contextmanager
    def check() -> Iterator[None]:
        failure = None
        try:
            yield
        except CheckpointError as err:
            failure = f"{type(err).__name__}: {err}"
        if failure is not None:  # `from None`: torch's long chained error is not shown
            raise pytest.fail.Exception(failure, pytrace=False) from None

    return check


@pytest.fixture
def ckpt_roundtrip(tmp_path: Path, ckpt_check) -> Callable[[Any], Any]:
    """`ckpt_roundtrip(obj)`: what `torch.load(weights_only=True)` gives back for `obj`
    saved to a real file, or a failure naming the paths torch refused."""
    from pytest_ckpt.harness import save_and_load

    counter = iter(range(1_000_000))

    def roundtrip(obj: Any) -> Any:
        with ckpt_check():
            return save_and_load(obj, tmp_path / f"roundtrip-{next(counter)}.pt")
        raise AssertionError("unreachable")  # pytest.fail raised above

    return roundtrip


@pytest.fixture
def ckpt_resume(ckpt_subject: Any, ckpt_options: CkptOptions, tmp_path: Path, ckpt_check):
    """`ckpt_resume(system, steps=None)`: continue vs save -> load -> resume; returns the
    continued run's step records, or fails with the differences."""
    from pytest_ckpt.harness import check_resume

    def resume(system: Any, steps: int | None = None) -> list[dict[str, Any]]:
        with ckpt_check():
            return check_resume(
                ckpt_subject, system, steps or ckpt_options.resume_steps, tmp_path / "resume.pt"
            )
        raise AssertionError("unreachable")

    return resume


@pytest.fixture
def ckpt_snapshot(snapshot: Any, pytestconfig: pytest.Config) -> Any:
    """syrupy's `snapshot`, with tensors serialized as shape/dtype/summary and floats compared
    with the session's tolerance (`--ckpt-snapshot-floats`, `--ckpt-snapshot-rtol/atol`)."""
    return snapshot.use_extension(_session(pytestconfig).snapshot_extension())


@pytest.fixture
def ckpt_backcompat(ckpt_check):
    """`ckpt_backcompat(directory, rebuild=None)`: every committed checkpoint under
    `directory` still loads with weights_only=True, matches its manifest.json sha256, and
    rebuilds; returns {name: state}, or fails naming the file and the reason."""
    from pytest_ckpt.backcompat import load_fixture_dir

    def check(directory: Any, rebuild: Callable[[Any], Any] | None = None) -> dict[str, Any]:
        with ckpt_check():
            return load_fixture_dir(directory, rebuild=rebuild)
        raise AssertionError("unreachable")

    return check
