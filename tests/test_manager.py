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


def test_a_sidecar_with_a_string_step_is_an_integrity_error_not_a_type_error(tmp_path) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1), 1)
    manager.save(_state(2), 2)
    sidecar = manager.path_for(2).with_suffix(".json")
    data = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**data, "step": "2"}))
    assert [info.step for info in manager.list()] == [1]
    assert manager.latest().step == 1 and manager.load()["step"] == 1
    with pytest.raises(CheckpointIntegrityError, match=r"ckpt-00000002.json: step must be an int"):
        manager.load(2)
    sidecar.write_text(json.dumps({**data, "bytes": "many"}))
    with pytest.raises(CheckpointIntegrityError, match=r"ckpt-00000002.json: bytes must be"):
        manager.verify(2)


def test_a_directory_named_like_a_checkpoint_is_not_a_checkpoint(tmp_path) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1), 1)
    (tmp_path / "ckpt-00000007.pt").mkdir()
    (tmp_path / "ckpt-00000007.json").write_text(
        manager.path_for(1).with_suffix(".json").read_text().replace("00000001", "00000007")
    )
    assert [info.step for info in manager.list()] == [1]
    assert manager.latest().step == 1 and manager.load()["step"] == 1
    with pytest.raises(CheckpointIntegrityError, match=r"ckpt-00000007.pt: is not a regular file"):
        manager.load(7)
    with pytest.raises(CheckpointError, match=r"ckpt-00000007.pt: a directory is in the way"):
        manager.save(_state(7), 7)
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(CheckpointError, match=r"file/ckpt-00000001.pt: cannot save"):
        CheckpointManager(tmp_path / "file").save(_state(1), 1)


def test_keep_last_never_removes_the_checkpoint_just_saved(tmp_path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=1)
    manager.save(_state(10), 10)
    info = manager.save(_state(5), 5)
    assert info.path.exists() and [i.step for i in manager.list()] == [5]
    assert manager.load(5)["step"] == 5
    two = CheckpointManager(tmp_path / "two", keep_last=2)
    for step in (10, 9, 5):
        two.save(_state(step), step)
    assert [i.step for i in two.list()] == [5, 10]


class _Died(BaseException):
    """The process died here (SIGKILL, power loss): nothing after it runs."""


@pytest.mark.parametrize("renames_before_death", [0, 1, 2])
def test_dying_while_resaving_a_step_keeps_a_good_copy(
    tmp_path, monkeypatch, renames_before_death
) -> None:
    """A re-save renames three times (pending sidecar, bytes, sidecar): dying before any of
    them leaves the old checkpoint or the new one, complete and verified, never neither."""
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1), 3)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        if len(calls) == renames_before_death:
            raise _Died
        calls.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_Died):
        manager.save(_state(2), 3)
    monkeypatch.setattr(os, "replace", real_replace)
    fresh = CheckpointManager(tmp_path)
    loaded = fresh.load(3)
    assert loaded["step"] in (1, 2) and torch.equal(
        loaded["weights"], _state(loaded["step"])["weights"]
    )
    assert fresh.latest().step == 3 and fresh.verify(3).sha256 == file_sha256(fresh.path_for(3))
    fresh.save(_state(4), 3)  # a later save of the step after the crash completes as usual
    assert fresh.load(3)["step"] == 4


def test_load_accepts_what_latest_and_list_return(tmp_path) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save(_state(1), 1)
    manager.save(_state(2), 2)
    assert manager.load(manager.latest())["step"] == 2
    assert manager.load(manager.list()[0])["step"] == 1
    other = CheckpointManager(tmp_path / "other")
    with pytest.raises(CheckpointError, match=r"ckpt-00000002.pt: not a checkpoint of .*other"):
        other.load(manager.latest())
    with pytest.raises(CheckpointError, match="step must be an int >= 0, got '2'"):
        manager.load("2")
