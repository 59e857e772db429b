"""Non-blocking saves (`save(..., blocking=False)`, `save_dcp(..., blocking=False)`): the
snapshot, the handle, the order of saves, and kills at any point of one."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
import torch

from pytest_ckpt.errors import CheckpointError
from pytest_ckpt.manager import CheckpointManager, PendingSave, file_sha256

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


class _GatedClock:
    """A clock the save thread blocks on until the test opens it: a save held mid-write."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def __call__(self) -> str:
        assert self.gate.wait(30), "the test never opened the gate"
        return "2026-01-01T00:00:00+00:00"


def test_a_non_blocking_save_writes_the_state_as_it_was_when_called(tmp_path) -> None:
    clock = _GatedClock()
    manager = CheckpointManager(tmp_path, clock=clock)
    first = manager.save({"v": 0}, 0, blocking=False)  # holds the save thread at its clock
    state = {"weights": torch.zeros(8, 8), "meta": {"lr": [0.1]}}
    handle = manager.save(state, 1, blocking=False)  # queued behind it: not yet written
    assert isinstance(handle, PendingSave) and not handle.done() and not first.done()
    with pytest.raises(TimeoutError):
        handle.wait(timeout=0.05)
    assert manager.latest() is None  # held mid-write: nothing offered yet
    state["weights"].add_(1.0)  # the training loop moves on at once
    state["meta"]["lr"].append(0.2)
    clock.gate.set()
    info = handle.wait()
    assert handle.done() and info.step == 1 and manager.latest() == info
    loaded = manager.load(1)
    assert torch.equal(loaded["weights"], torch.zeros(8, 8)) and loaded["meta"] == {"lr": [0.1]}


def test_saves_are_written_in_call_order_blocking_ones_included(tmp_path) -> None:
    """A save started while another is in flight waits for it (ordered, never refused)."""
    clock = _GatedClock()
    manager = CheckpointManager(tmp_path, clock=clock)
    handles = [manager.save({"v": value}, 7, blocking=False) for value in range(4)]
    handles.append(manager.save({"v": 9}, 8, blocking=False))
    assert not any(handle.done() for handle in handles)
    clock.gate.set()
    blocking = manager.save({"v": 10}, 9)  # after all five, in the caller's call
    assert all(handle.done() for handle in handles)
    assert manager.load(7) == {"v": 3}  # the last one asked for, not the last one to finish
    assert [info.step for info in manager.list()] == [7, 8, 9] and blocking.step == 9


def test_a_failed_non_blocking_save_raises_from_wait_and_later_saves_go_on(tmp_path) -> None:
    (tmp_path / "file").write_text("not a directory")
    broken = CheckpointManager(tmp_path / "file")
    handle = broken.save({"v": 1}, 1, blocking=False)
    with pytest.raises(CheckpointError, match=r"file/ckpt-00000001.pt: cannot save"):
        handle.wait()
    manager = CheckpointManager(tmp_path / "ok")
    manager.save({"v": 1}, 1, blocking=False)
    assert manager.save({"v": 2}, 2, blocking=False).wait().step == 2


def test_a_state_that_cannot_be_snapshot_is_refused_at_the_call(tmp_path) -> None:
    class Unsnapshottable:
        def __deepcopy__(self, memo):
            raise TypeError("no copies")

    manager = CheckpointManager(tmp_path)
    with pytest.raises(CheckpointError, match=r"state\['extra'\]\[0\]: cannot snapshot"):
        manager.save({"extra": [Unsnapshottable()]}, 1, blocking=False)
    assert manager.list() == []


def test_a_non_blocking_dcp_save_snapshots_and_is_offered_once_complete(tmp_path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=1)
    manager.save_dcp({"w": torch.ones(4)}, 1)
    state = {"w": torch.full((64, 64), 2.0), "n": {"k": 3}}
    handle = manager.save_dcp(state, 2, blocking=False)
    assert isinstance(handle, PendingSave)
    state["w"].add_(1.0)
    assert handle.wait() == manager.dcp_path_for(2)
    assert [info.step for info in manager.list_dcp()] == [2]  # keep_last, after it completed
    restored = {"w": torch.zeros(64, 64), "n": {"k": 0}}
    assert manager.load_dcp(restored).step == 2
    assert torch.equal(restored["w"], torch.full((64, 64), 2.0)) and restored["n"] == {"k": 3}


def _die_at_rename_of(suffix: str):
    """os.replace that kills the process instead of moving a file onto `...suffix`."""
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith(suffix):
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)

    return replace


@pytest.mark.parametrize("suffix", [".json", ".pt", ".dcp"])
def test_a_kill_planted_inside_a_non_blocking_save_keeps_the_last_complete_one(
    tmp_path, suffix
) -> None:
    """The child saves step 1, then dies inside the non-blocking save of step 2 (at the
    rename of its bytes, of its sidecar, or of its DCP folder) with keep_last=1."""
    dcp = suffix == ".dcp"
    pid = os.fork()
    if pid == 0:
        try:
            manager = CheckpointManager(tmp_path, keep_last=1)
            save = manager.save_dcp if dcp else manager.save
            save({"w": torch.ones(16)}, 1)
            os.replace = _die_at_rename_of(suffix)
            save({"w": torch.full((16,), 2.0)}, 2, blocking=False).wait()
        finally:
            os._exit(3)  # reached only if no kill happened
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    manager = CheckpointManager(tmp_path)
    if dcp:
        assert manager.latest_dcp().step == 1
        restored = {"w": torch.zeros(16)}
        manager.load_dcp(restored)
        assert torch.equal(restored["w"], torch.ones(16))
    else:
        assert manager.latest().step == 1 and torch.equal(manager.load()["w"], torch.ones(16))


def _kill_async_saves_repeatedly(tmp_path, *, dcp: bool, attempts: int) -> None:
    """Kill a child doing non-blocking saves with keep_last=1 at random moments: after every
    kill a complete checkpoint is offered, and it loads to what was saved."""
    rng = random.Random(0)
    payload = {"weights": torch.randn(256, 1024)}  # ~1 MB
    seed = CheckpointManager(tmp_path, keep_last=1)
    (seed.save_dcp if dcp else seed.save)(payload, 0)
    for attempt in range(attempts):
        pid = os.fork()
        if pid == 0:
            try:
                manager = CheckpointManager(tmp_path, keep_last=1)
                save = manager.save_dcp if dcp else manager.save
                handles = [
                    save(payload, step, blocking=False)
                    for step in range(attempt * 100 + 1, attempt * 100 + 100)
                ]
                handles[-1].wait()
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        manager = CheckpointManager(tmp_path)
        if dcp:
            latest = manager.latest_dcp()
            assert latest is not None, f"attempt {attempt}: no complete DCP folder offered"
            restored = {"weights": torch.zeros(256, 1024)}
            manager.load_dcp(restored)
            assert torch.equal(restored["weights"], payload["weights"])
        else:
            latest = manager.latest()
            assert latest is not None, f"attempt {attempt}: no complete checkpoint offered"
            assert file_sha256(latest.path) == latest.sha256
            assert torch.equal(manager.load()["weights"], payload["weights"])


@pytest.mark.slow
def test_sigkill_during_non_blocking_saves_never_loses_the_last_complete_checkpoint(
    tmp_path,
) -> None:
    _kill_async_saves_repeatedly(tmp_path, dcp=False, attempts=60)


@pytest.mark.slow
def test_sigkill_during_non_blocking_dcp_saves_never_loses_the_last_complete_folder(
    tmp_path,
) -> None:
    _kill_async_saves_repeatedly(tmp_path, dcp=True, attempts=30)
