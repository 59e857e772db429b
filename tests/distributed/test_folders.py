"""CheckpointManager's DCP folders: written into a temporary folder, `.metadata` last,
renamed into place, then a sidecar with each file's sha256; list/latest never offer a
folder whose save did not finish, or whose files changed since."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

import pytest
import torch
import torch.distributed.checkpoint  # imported once here, not in every forked rank

from pytest_ckpt.errors import CheckpointError
from pytest_ckpt.manager import CheckpointIntegrityError, CheckpointManager

_CLOCK = "2026-01-01T00:00:00+00:00"


def _state(step: int, ranks: int = 1) -> dict:
    return {**{f"w{r}": torch.full((64,), float(step + r)) for r in range(ranks)}, "step": step}


def _template(ranks: int = 1, size: int = 64) -> dict:
    return {**{f"w{r}": torch.zeros(size) for r in range(ranks)}, "step": -1}


def _manager(directory, **kwargs) -> CheckpointManager:
    return CheckpointManager(directory, clock=lambda: _CLOCK, **kwargs)


def test_save_list_latest_verify_and_load_in_one_process(tmp_path) -> None:
    manager = _manager(tmp_path)
    assert manager.list_dcp() == [] and manager.latest_dcp() is None
    for step in (3, 1, 5):
        assert manager.save_dcp(_state(step), step) == manager.dcp_path_for(step)
    assert [info.step for info in manager.list_dcp()] == [1, 3, 5]
    assert manager.latest_dcp().step == 5
    state = _template()
    assert manager.load_dcp(state).step == 5 and state["step"] == 5
    assert torch.equal(state["w0"], torch.full((64,), 5.0))
    assert manager.load_dcp(state, 3).step == 3 and state["step"] == 3
    folder = manager.dcp_path_for(5)
    sidecar = json.loads(folder.with_name(folder.name + ".json").read_text())
    assert sidecar["folder"] == "ckpt-00000005.dcp" and sidecar["created"] == _CLOCK
    assert set(sidecar["files"]) == {p.name for p in folder.iterdir()} >= {".metadata"}
    assert sidecar["world_size"] == 1 and sidecar["step"] == 5
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert manager.list() == []  # the file API does not see folders


def test_unfinished_saves_and_changed_files_are_never_offered(tmp_path) -> None:
    manager = _manager(tmp_path)
    manager.save_dcp(_state(1), 1)
    manager.save_dcp(_state(2), 2)
    (tmp_path / ".tmp-ckpt-00000003.dcp").mkdir()  # a save killed while writing
    (tmp_path / ".tmp-ckpt-00000003.dcp" / "__0_0.distcp").write_bytes(b"partial")
    manager.save_dcp(_state(4), 4)
    (tmp_path / "ckpt-00000004.dcp.json").unlink()  # killed between rename and sidecar
    assert [info.step for info in manager.list_dcp()] == [1, 2]
    shard = next(manager.dcp_path_for(2).glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert manager.latest_dcp().step == 1  # the newest one whose files still match
    with pytest.raises(CheckpointIntegrityError, match=r"ckpt-00000002.dcp: .*do not match"):
        manager.verify_dcp(2)
    with pytest.raises(CheckpointIntegrityError, match="ckpt-00000004.dcp: no sidecar"):
        manager.load_dcp(_template(), 4)
    (manager.dcp_path_for(1) / "stray.bin").write_bytes(b"x")
    assert manager.latest_dcp() is None
    with pytest.raises(CheckpointError, match="no complete DCP checkpoint"):
        manager.load_dcp(_template())


def test_keep_last_prunes_folders_and_a_step_can_be_saved_again(tmp_path) -> None:
    manager = _manager(tmp_path, keep_last=2)
    for step in range(4):
        manager.save_dcp(_state(step), step)
    assert [info.step for info in manager.list_dcp()] == [2, 3]
    assert not manager.dcp_path_for(0).exists()
    manager.save_dcp(_state(30), 3)  # again, with other content
    state = _template()
    manager.load_dcp(state, 3)
    assert state["step"] == 30


def test_keep_last_never_removes_the_dcp_folder_just_saved(tmp_path) -> None:
    """A save of an older step (a rerun from an earlier checkpoint) is kept, as the file
    checkpoints' keep_last keeps it: pruning by step alone deleted the folder it returned."""
    manager = _manager(tmp_path, keep_last=1)
    manager.save_dcp(_state(10), 10)
    folder = manager.save_dcp(_state(5), 5)
    assert folder.is_dir()
    assert [info.step for info in manager.list_dcp()] == [5]
    state = _template()
    manager.load_dcp(state, 5)
    assert state["step"] == 5


def _save_until_killed(context, payload) -> None:
    directory, first = payload
    (directory / f"pid{context.rank}").write_text(str(os.getpid()))
    manager = CheckpointManager(directory)
    step = first
    while True:
        state = {f"w{context.rank}": torch.full((4096,), float(step + context.rank)), "step": step}
        manager.save_dcp(state, step, process_group=context.group)
        step += 1


def _kill_one_rank(directory, delay: float, rank: int) -> None:
    deadline = time.monotonic() + 30
    pid_file = directory / f"pid{rank}"
    while not (pid_file.exists() and (directory / f"pid{1 - rank}").exists()):
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)
    time.sleep(delay)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.slow
def test_killing_a_rank_mid_save_60_times_never_offers_a_partial_folder(tmp_path) -> None:
    from pytest_ckpt.distributed.launch import run_ranks
    from pytest_ckpt.errors import DistributedRunError

    work, directory = tmp_path / "work", tmp_path / "ckpts"
    directory.mkdir()
    manager = CheckpointManager(directory)
    chooser = random.Random(15)
    next_step, interrupted = 0, 0
    for _kill in range(60):
        for pid in directory.glob("pid*"):
            pid.unlink()
        killer = threading.Thread(
            target=_kill_one_rank,
            args=(directory, chooser.uniform(0.0, 0.25), chooser.randrange(2)),
        )
        killer.start()
        with pytest.raises(DistributedRunError, match=r"died|Connection|closed|reset|peer"):
            run_ranks(2, _save_until_killed, (directory, next_step), workdir=work, timeout=60)
        killer.join()
        interrupted += any(directory.glob(".tmp-*"))
        infos = manager.list_dcp()
        for info in infos:  # every folder with a sidecar is complete and right
            assert manager.verify_dcp(info.step) == info
        latest = manager.latest_dcp()
        if latest is not None:
            assert latest.step == infos[-1].step
            state = _template(ranks=2, size=4096)
            manager.load_dcp(state, latest.step)
            assert state["step"] == latest.step
            assert torch.equal(state["w1"], torch.full((4096,), float(latest.step + 1)))
            next_step = latest.step + 1
    assert interrupted >= 10  # the kills did land in the middle of saves
    assert next_step >= 20  # and saves did complete between them
