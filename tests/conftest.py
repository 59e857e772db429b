import os

import pytest
import torch
from hypothesis import settings

# One intra-op thread per process: the suite runs as two xdist workers on two cores and many
# tests start pytest or ranks in subprocesses (they inherit the variable); torch's default of
# one thread per core oversubscribes the cores and spin-waits (measured: 15 s -> 8 s for one
# pytester test). Results compared exactly are always produced within one process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
# The pytest, CLI and rank processes the suite starts may keep bytecode caches: with
# PYTHONDONTWRITEBYTECODE set (some shells and CI images set it), each inner pytest run compiled
# and assert-rewrote hypothesis', syrupy's and pytest-ckpt's modules again (measured: one pytester
# run 4.0 s -> 2.8 s). Caches go to __pycache__ folders, which git ignores.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

pytest_plugins = ["pytester"]

# Our own suite runs the derandomized, bounded profile in CI (registered by pytest-ckpt's
# hypothesis entry point); users choose theirs with --hypothesis-profile.
if os.environ.get("CI") == "true":
    settings.load_profile("ckpt-ci")


@pytest.fixture
def pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """pytester whose `runpytest_subprocess` forks from a process that imported torch once
    (`tests.forked_runs`): the run is the same, ~2 s sooner."""
    from functools import partial

    from tests.forked_runs import forked_popen

    pytester.popen = partial(forked_popen, pytester, pytester.popen)  # type: ignore[method-assign]
    return pytester


@pytest.fixture(autouse=True)
def _inner_runs_print_as_a_users_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """With CI or BUILD_NUMBER set, pytest prints whole failure messages in its short test
    summary: the pytest runs our tests start must print as a user's terminal does, wherever
    the suite itself runs (CI sets CI=true)."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
