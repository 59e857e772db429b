"""The fixtures users write their own tests with. Each imports what it runs lazily, so a
session that never uses them never imports torch."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_ckpt.plugin.options import CkptOptions
from pytest_ckpt.plugin.session import ckpt_session


@pytest.fixture(scope="session")
def ckpt_options(pytestconfig: pytest.Config) -> CkptOptions:
    """The resolved `--ckpt-*` options."""
    return ckpt_session(pytestconfig).options


@pytest.fixture(scope="session")
def ckpt_subject(pytestconfig: pytest.Config) -> Any:
    """The subject under test (`--ckpt-subject`), for your own tests."""
    return ckpt_session(pytestconfig).subject


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
    from pytest_ckpt.checks.calls import call_subject

    return call_subject(ckpt_subject, "build", grid=ckpt_grid, stage=ckpt_stage, seed=0)


@pytest.fixture
def ckpt_check(
    request: pytest.FixtureRequest,
) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """Turn a CheckpointError into a test failure showing only its message (no traceback).

    A long list (refused objects, differences) is shortened in the terminal unless `-v` is
    given; the whole message goes to the item's user_properties, from which the
    `--ckpt-report` report takes it (under xdist too)."""
    from pytest_ckpt.errors import CheckpointError
    from pytest_ckpt.plugin.report import FULL_FAILURE_PROPERTY, shortened

    config = request.config

    @contextlib.contextmanager
    def check() -> Iterator[None]:
        failure = None
        try:
            yield
        except CheckpointError as err:
            name = type(err).__name__
            request.node.user_properties.append((FULL_FAILURE_PROPERTY, f"{name}: {err.full}"))
            report = ckpt_session(config).options.report
            shown = shortened(err, verbose=config.get_verbosity() > 0, report=report)
            failure = f"{name}: {shown}"
        if failure is not None:  # `from None`: torch's long chained error is not shown
            raise pytest.fail.Exception(failure, pytrace=False) from None

    return check


@pytest.fixture
def ckpt_roundtrip(tmp_path: Path, ckpt_check) -> Callable[[Any], Any]:
    """`ckpt_roundtrip(obj)`: what `torch.load(weights_only=True)` gives back for `obj`
    saved to a real file, or a failure naming the paths torch refused."""
    from pytest_ckpt.checks.loading import save_and_load

    counter = iter(range(1_000_000))

    def roundtrip(obj: Any) -> Any:
        with ckpt_check():
            return save_and_load(obj, tmp_path / f"roundtrip-{next(counter)}.pt")
        raise AssertionError("unreachable")  # pytest.fail raised above

    return roundtrip


@pytest.fixture
def ckpt_resume(
    ckpt_subject: Any,
    ckpt_options: CkptOptions,
    tmp_path: Path,
    ckpt_check,
    pytestconfig: pytest.Config,
):
    """`ckpt_resume(system, steps=None)`: continue vs save -> load -> resume; returns the
    continued run's step records, or fails with the causes and differences (floats compared
    under `--ckpt-resume-tolerance`; all of them with -v, else the first few)."""
    from pytest_ckpt.checks.roundtrip import check_resume
    from pytest_ckpt.checks.tolerance import profile_named

    tolerance = profile_named(ckpt_options.resume_tolerance)

    def resume(system: Any, steps: int | None = None) -> list[dict[str, Any]]:
        with ckpt_check():
            return check_resume(
                ckpt_subject,
                system,
                steps or ckpt_options.resume_steps_for(ckpt_subject),
                tmp_path / "resume.pt",
                tolerance=tolerance,
                verbose=pytestconfig.get_verbosity() > 0,
            )
        raise AssertionError("unreachable")

    return resume


@pytest.fixture
def ckpt_snapshot(snapshot: Any, pytestconfig: pytest.Config) -> Any:
    """syrupy's `snapshot`, with tensors serialized as shape/dtype/summary and floats compared
    with the session's tolerance (`--ckpt-snapshot-floats`, `--ckpt-snapshot-rtol/atol`)."""
    return snapshot.use_extension(ckpt_session(pytestconfig).snapshot_extension())


@pytest.fixture
def ckpt_clock() -> Iterator[Callable[..., Any]]:
    """`ckpt_clock("mypkg.model", "mypkg.telemetry", tick=0.0)`: those modules read a
    deterministic clock (time.time, time.monotonic, datetime.now/utcnow, however they imported
    them) until the test ends; returns the `DeterministicClock` (`.advance(seconds)`)."""
    from pytest_ckpt.plugin.clock import START, frozen_clock

    with contextlib.ExitStack() as stack:

        def freeze(*modules: Any, start: float = START, tick: float = 0.0) -> Any:
            try:
                return stack.enter_context(frozen_clock(modules, start=start, tick=tick))
            except ValueError as err:
                raise pytest.fail.Exception(f"ckpt_clock: {err}", pytrace=False) from None

        yield freeze


@pytest.fixture
def ckpt_backcompat(ckpt_check):
    """`ckpt_backcompat(directory, rebuild=None, pattern="*.pt")`: every committed checkpoint
    under `directory` matching `pattern` (a glob, or several: `("*.pt", "*.ckpt")`) still loads
    with weights_only=True, matches its manifest.json sha256, and rebuilds; returns
    {name: state}, or fails naming the file and the reason."""
    from pytest_ckpt.checks.golden import load_fixture_dir

    def check(
        directory: Any,
        rebuild: Callable[[Any], Any] | None = None,
        pattern: str | Sequence[str] = "*.pt",
    ) -> dict[str, Any]:
        with ckpt_check():
            return load_fixture_dir(directory, rebuild=rebuild, pattern=pattern)
        raise AssertionError("unreachable")

    return check
