from __future__ import annotations

import enum
import json
import os
import random
import signal
import time

import pytest
import torch

from pytest_ckpt.errors import CheckpointError, CheckpointLoadError
from pytest_ckpt.manager import CheckpointIntegrityError, CheckpointManager, file_sha256


class Color(enum.Enum):
    RED = 1


def _state(step: int) -> dict:
    return {"step": step, "weights": torch.full((64, 64), float(step))}


def test_save_list_latest_and_load(tmp_path) -> None:
    manager = CheckpointManager(tmp_path / "ckpts", clock=lambda: "2026-01-01T00:00:00+00:00")
    assert manager.list() == [] and manager.latest() is None
    for step in (3, 1, 10):
        manager.save(_state(step), step)
    assert [info.step for info in manager.list()] == [1, 3, 10]
    latest = manager.latest()
    assert latest is not None and latest.step == 10
    assert manager.load()["step"] == 10
    assert torch.equal(manager.load(3)["weights"], _state(3)["weights"])
    sidecar = json.loads(latest.path.with_suffix(".json").read_text())
    assert sidecar == {
        "schema_version": 1,
        "step": 10,
        "file": "ckpt-00000010.pt",
        "sha256": file_sha256(latest.path),
        "bytes": latest.path.stat().st_size,
        "torch_version": torch.__version__,
        "created": "2026-01-01T00:00:00+00:00",
    }
    assert not list((tmp_path / "ckpts").glob(".tmp-*"))


def test_keep_last_removes_the_oldest(tmp_path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in range(5):
        manager.save(_state(step), step)
    assert [info.step for info in manager.list()] == [3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-00000003.json",
        "ckpt-00000003.pt",
        "ckpt-00000004.json",
        "ckpt-00000004.pt",
    ]


def test_tampering_is_detected_with_the_path(tmp_path) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1), 1)
    manager.save(_state(2), 2)
    path = manager.path_for(2)
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(
        CheckpointIntegrityError, match=r"ckpt-00000002.pt: sha256 .* does not match"
    ):
        manager.load(2)
    assert manager.latest().step == 1  # the newest one that verifies


def test_errors_carry_path_and_reason_never_none(tmp_path) -> None:
    manager = CheckpointManager(tmp_path)
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        manager.load()
    with pytest.raises(CheckpointIntegrityError, match="no such checkpoint"):
        manager.load(7)

    manager.save({"color": Color.RED}, 1)
    with pytest.raises(CheckpointLoadError, match=r"ckpt-00000001.pt: Unsupported global"):
        manager.load(1)
    manager.path_for(1).with_suffix(".json").write_text("{not json")
    with pytest.raises(CheckpointIntegrityError, match="unreadable sidecar"):
        manager.verify(1)


@pytest.mark.parametrize("bad", [{"keep_last": 0}, {"prefix": "a/b"}])
def test_bad_arguments(tmp_path, bad) -> None:
    with pytest.raises(ValueError):
        CheckpointManager(tmp_path, **bad)
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        CheckpointManager(tmp_path).save({}, -1)


def test_sigkill_during_save_never_leaves_a_partial_checkpoint(tmp_path) -> None:
    """Kill a saving child at random moments, 100 times: every final path that exists is
    complete, and latest() only ever offers a file whose bytes match its sidecar."""
    rng = random.Random(0)
    kills = 0
    directory = tmp_path / "ckpts"
    payload = {"weights": torch.randn(256, 1024)}  # ~1 MB: a save takes a few ms
    for attempt in range(100):
        pid = os.fork()
        if pid == 0:  # child: save checkpoints until killed
            try:
                manager = CheckpointManager(directory, keep_last=3)
                for step in range(attempt * 100, attempt * 100 + 100):
                    manager.save(payload, step)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.03))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills += 1
        manager = CheckpointManager(directory)
        for path in directory.glob("ckpt-*.pt"):
            loaded = torch.load(path, weights_only=True)  # complete, whatever the sidecar says
            assert torch.equal(loaded["weights"], payload["weights"])
        latest = manager.latest()
        if latest is not None:
            assert file_sha256(latest.path) == latest.sha256
            assert torch.equal(manager.load()["weights"], payload["weights"])
    assert kills == 100
