"""The tests `--ckpt-roundtrip` adds to a session, one of each per stage x grid:

    ckpt::roundtrip[BLENDING-2x2]  save -> load(weights_only=True) -> rebuild, compared exactly
                                   (and the forward probe's outputs, if the subject has one)
    ckpt::resume[BLENDING-2x2]     continue N steps vs save -> load -> resume N steps
    ckpt::snapshot[BLENDING-2x2]   the loaded state and one resumed step vs a reviewed snapshot
    ckpt::world_size[BLENDING-2x2-2:1]  with --ckpt-world-sizes: saved at 2 ranks, resumed at 1

They are ordinary test functions collected from this module by `MatrixModule`, so they get
fixtures, `-k`, xdist and syrupy like any other test; `ckpt_stage` and `ckpt_grid` are
parametrized by the plugin's `pytest_generate_tests`. Their subject is the session's
(`--ckpt-subject`), the one the stages and grids came from. A subject without slot grids has
items per stage only: `ckpt::roundtrip[WARMUP]`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_ckpt.distributed.world_size_option import pair_id
from pytest_ckpt.plugin.report import strip_ansi
from pytest_ckpt.plugin.session import CELL_PROPERTY, ckpt_session

GENERATED_TESTS = ("roundtrip", "resume", "snapshot")


class MatrixModule(pytest.Module):
    """The `ckpt` collector: the test functions of this module, ids `ckpt::...`."""

    def _getobj(self):
        return importlib.import_module(__name__)

    def funcnamefilter(self, name: str) -> bool:
        if name == "world_size":  # only when --ckpt-world-sizes names pairs
            return bool(ckpt_session(self.config).options.world_sizes)
        return name in GENERATED_TESTS

    def classnamefilter(self, name: str) -> bool:
        return False


def collect_matrix(session: pytest.Session) -> list[pytest.Item]:
    """The generated items, each carrying its cell (kind, stage, grid) in its
    user_properties, which travel with its reports (xdist workers included)."""
    ckpt = ckpt_session(session.config)
    module = MatrixModule.from_parent(session, path=Path(session.config.rootpath, "ckpt"))
    items = list(session.genitems(module))
    for item in items:
        params = item.callspec.params  # type: ignore[attr-defined]
        kind = item.originalname  # type: ignore[attr-defined]
        if "ckpt_world_size" in params:
            kind = f"world_size {pair_id(params['ckpt_world_size'])}"
        grid = ckpt.grid_label(params["ckpt_grid"])
        item.user_properties.append((CELL_PROPERTY, (kind, params["ckpt_stage"], grid)))
    return items


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run the matrix on one torch thread: float results (and snapshot digests) then do not
    depend on the core count or on `-n`; with 1 vs 2 threads trained floats can differ."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def matrix_subject(pytestconfig: pytest.Config) -> Any:
    return ckpt_session(pytestconfig).subject


@pytest.fixture
def matrix_system(
    matrix_subject: Any, ckpt_stage: str, ckpt_grid: tuple[int, int], ckpt_check
) -> Any:
    from pytest_ckpt.checks.calls import call_subject

    with ckpt_check():
        return call_subject(matrix_subject, "build", grid=ckpt_grid, stage=ckpt_stage, seed=0)
    raise AssertionError("unreachable")  # pytest.fail raised above


def roundtrip(matrix_subject, matrix_system, ckpt_check, tmp_path) -> None:
    from pytest_ckpt.checks.roundtrip import check_roundtrip

    with ckpt_check():
        check_roundtrip(matrix_subject, matrix_system, tmp_path / "checkpoint.pt")


def resume(matrix_subject, matrix_system, ckpt_check, ckpt_options, tmp_path) -> None:
    from pytest_ckpt.checks.roundtrip import check_resume
    from pytest_ckpt.checks.tolerance import profile_named

    with ckpt_check():
        steps, tolerance = ckpt_options.resume_steps, profile_named(ckpt_options.resume_tolerance)
        check_resume(
            matrix_subject, matrix_system, steps, tmp_path / "ckpt.pt", tolerance=tolerance
        )


def snapshot(matrix_subject, matrix_system, ckpt_check, snapshot, tmp_path, pytestconfig) -> None:
    from pytest_ckpt.checks.roundtrip import snapshot_record

    extension = ckpt_session(pytestconfig).snapshot_extension(matrix=True)
    assertion = snapshot.use_extension(extension)
    with ckpt_check():
        record: Any = snapshot_record(matrix_subject, matrix_system, tmp_path / "checkpoint.pt")
    # Explicit diff: this module's asserts are not rewritten by pytest, so a bare
    # `assert assertion == record` would fail without syrupy's diff.
    if assertion != record:
        name, subject = assertion.test_location.nodename, matrix_subject.name
        diff = "\n".join(assertion.get_assert_diff())
        if not pytestconfig.get_terminal_writer().hasmarkup:
            diff = strip_ansi(diff)  # syrupy colours its diff; logs and reports want text
        if assertion.executions[assertion.num_executions - 1].recalled_data is None:
            head = (
                f"no snapshot yet for {name} (subject {subject}): review the state "
                "below and run with --snapshot-update to record it"
            )
        else:
            head = f"snapshot {name} (subject {subject}) differs:"
        pytest.fail(f"{head}\n{diff}", pytrace=False)


def world_size(
    matrix_subject, ckpt_stage, ckpt_grid, ckpt_world_size, ckpt_check, ckpt_options, tmp_path
) -> None:
    """Saved with DCP at SAVE ranks, resumed at LOAD ranks in fresh processes: parameters,
    optimizer state, metrics and per-rank RNG streams equal the run that continued."""
    from pytest_ckpt.distributed.world_size import check_world_size_resume

    save, load = ckpt_world_size
    with ckpt_check():
        check_world_size_resume(
            matrix_subject,
            stage=ckpt_stage,
            grid=ckpt_grid,
            save_world_size=save,
            load_world_size=load,
            steps=ckpt_options.resume_steps,
            workdir=tmp_path,
        )
