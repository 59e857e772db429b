"""The tests `--ckpt-roundtrip` adds to a session, one of each per stage x grid:

    ckpt::roundtrip[BLENDING-2x2]  save -> load(weights_only=True) -> rebuild, compared exactly
    ckpt::resume[BLENDING-2x2]     continue N steps vs save -> load -> resume N steps
    ckpt::snapshot[BLENDING-2x2]   the loaded state and one resumed step vs a reviewed snapshot

They are ordinary test functions collected from this module (see plugin.GeneratedModule),
so they get fixtures, `-k`, xdist and syrupy like any other test. Parametrization over
`ckpt_stage` and `ckpt_grid` comes from the plugin's `pytest_generate_tests`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pytest_ckpt.harness import check_resume, check_roundtrip, snapshot_record
from pytest_ckpt.report import strip_ansi

GENERATED_TESTS = ("roundtrip", "resume", "snapshot")


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


def roundtrip(ckpt_subject, ckpt_model, ckpt_check, tmp_path) -> None:
    with ckpt_check():
        check_roundtrip(ckpt_subject, ckpt_model, tmp_path / "checkpoint.pt")


def resume(ckpt_subject, ckpt_model, ckpt_check, ckpt_options, tmp_path) -> None:
    with ckpt_check():
        check_resume(ckpt_subject, ckpt_model, ckpt_options.resume_steps, tmp_path / "ckpt.pt")


def snapshot(ckpt_subject, ckpt_model, ckpt_check, snapshot, tmp_path, pytestconfig) -> None:
    from pytest_ckpt.plugin import matrix_snapshot_extension

    assertion = snapshot.use_extension(matrix_snapshot_extension(pytestconfig))
    with ckpt_check():
        record: Any = snapshot_record(ckpt_subject, ckpt_model, tmp_path / "checkpoint.pt")
    # Explicit diff: this module's asserts are not rewritten by pytest, so a bare
    # `assert assertion == record` would fail without syrupy's diff.
    if assertion != record:
        name = assertion.test_location.nodename
        diff = "\n".join(assertion.get_assert_diff())
        if not pytestconfig.get_terminal_writer().hasmarkup:
            diff = strip_ansi(diff)  # syrupy colours its diff; logs and reports want text
        if assertion.executions[assertion.num_executions - 1].recalled_data is None:
            head = (
                f"no snapshot yet for {name} (subject {ckpt_subject.name}): review the state "
                "below and run with --snapshot-update to record it"
            )
        else:
            head = f"snapshot {name} (subject {ckpt_subject.name}) differs:"
        pytest.fail(f"{head}\n{diff}", pytrace=False)
