"""ModuleSubject and the global RNGs a project's batches draw from: numpy's global RNG is saved
and restored like torch's and Python's, the forward probe reads none of them, and timm-style
schedulers (`step(epoch)` at an epoch's end, `step_update(num_updates)` after each optimizer
step) are driven as timm's training loop drives them."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pytest_ckpt import ModuleSubject
from pytest_ckpt.checks.roundtrip import check_resume, check_roundtrip


def net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def numpy_augmented(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmentation as many projects write it: noise from numpy's global RNG."""
    x, y = torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)
    return x + torch.from_numpy(np.random.standard_normal((8, 4)).astype(np.float32)), y


def python_augmented(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)
    return x * random.uniform(0.5, 1.5), y


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_numpy_global_rng_augmentation_round_trips_and_resumes_exactly(tmp_path) -> None:
    subject = ModuleSubject(net, make_batch=numpy_augmented, stages={"WARMUP": 2})
    system = subject.build(grid=(1, 1), stage="WARMUP", seed=0)
    state = check_roundtrip(subject, system, tmp_path / "a.pt").state
    assert state["numpy_rng"]["keys"].dtype == torch.int64  # a tensor: weights_only loads it
    np.random.seed(12345)  # whatever happens in between, the rebuild restores numpy's RNG
    check_resume(subject, system, 2, tmp_path / "b.pt")


@pytest.mark.parametrize("make_batch", [numpy_augmented, python_augmented])
def test_the_probe_batch_depends_on_no_global_rng_and_changes_none(make_batch) -> None:
    subject = ModuleSubject(net, make_batch=make_batch)
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    outputs = []
    for seed in (1, 2):
        np.random.seed(seed)
        random.seed(seed)
        torch.manual_seed(seed)
        before = (np.random.get_state()[1].copy(), random.getstate(), torch.get_rng_state())
        outputs.append(subject.probe(system))
        after = (np.random.get_state()[1], random.getstate(), torch.get_rng_state())
        assert np.array_equal(before[0], after[0]) and before[1] == after[1]
        assert torch.equal(before[2], after[2])
    assert torch.equal(outputs[0], outputs[1])


class EpochAndUpdateScheduler:
    """timm's `Scheduler` API, small: `step(epoch)` at each epoch's end, `step_update(
    num_updates)` after each optimizer step; its state is its `__dict__` but the optimizer."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_updates: int = 3) -> None:
        self.optimizer = optimizer
        self.base_lr = optimizer.param_groups[0]["lr"]
        self.warmup_updates = warmup_updates
        self.epoch = 0
        self.updates = 0
        self._apply()

    def step(self, epoch: int, metric: float | None = None) -> None:
        self.epoch = epoch
        self._apply()

    def step_update(self, num_updates: int, metric: float | None = None) -> None:
        self.updates = num_updates
        self._apply()

    def _apply(self) -> None:
        warmup = min(1.0, (self.updates + 1) / (self.warmup_updates + 1))
        for group in self.optimizer.param_groups:
            group["lr"] = self.base_lr * warmup * 0.5**self.epoch

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


def test_timm_style_schedulers_step_per_update_and_per_epoch_and_resume(tmp_path) -> None:
    subject = ModuleSubject(
        net,
        make_batch=lambda g: (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)),
        make_optimizer=lambda model: torch.optim.SGD(model.parameters(), lr=0.8),
        make_schedulers=EpochAndUpdateScheduler,
        steps_per_epoch=2,
        stages={"WARMUP": 1, "DECAY": 5},
    )
    system = subject.build(grid=(1, 1), stage="DECAY", seed=0)
    state = check_roundtrip(subject, system, tmp_path / "a.pt").state
    assert (state["schedulers"][0]["epoch"], state["schedulers"][0]["updates"]) == (2, 5)
    records = check_resume(subject, system, 3, tmp_path / "b.pt")
    # updates 6, 7, 8 (warm-up over); epoch 3 ends after update 6, epoch 4 after update 8
    assert [r["metrics"]["lr"] for r in records] == [0.1, 0.1, 0.05]
