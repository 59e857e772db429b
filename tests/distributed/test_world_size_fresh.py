"""The load ranks of the world-size check start from a fresh system (another seed, no step
taken) and get everything from the checkpoint, so state a restart loses fails, with its cause
said first. Forked gloo ranks: ~4 s a pair."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from pytest_ckpt import ModuleSubject
from pytest_ckpt.distributed.module_system import ModuleSubjectSystem
from pytest_ckpt.distributed.world_size import check_world_size_resume
from pytest_ckpt.errors import WorldSizeResumeMismatch
from tests.distributed.conftest import small_model


def check(subject: Any, save: int, load: int, workdir) -> Any:
    return check_world_size_resume(
        subject, stage="TRAINING", grid=(1, 1), save_world_size=save, load_world_size=load,
        steps=2, workdir=workdir, timeout=120,
    )  # fmt: skip


def numpy_augmented(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)
    return x + torch.from_numpy(np.random.standard_normal((8, 4)).astype(np.float32)), y


class SavesOnlyTheGenerator(ModuleSubjectSystem):
    """A project's own rank state: its data generator, not numpy's global RNG."""

    def rank_state(self) -> dict[str, Any]:
        return {"generator": self.system["generator"].get_state()}


class NumpyAugmenting(ModuleSubject):
    def build_distributed(self, *, grid, stage, seed, parallel, fresh=False):
        return SavesOnlyTheGenerator(self, parallel, seed, stage, fresh=fresh)


@pytest.mark.parametrize(("save", "load"), [(2, 1), (1, 2)])
def test_numpy_augmentation_the_checkpoint_does_not_hold_fails_naming_numpy(
    tmp_path, save, load
) -> None:
    subject = NumpyAugmenting(small_model, make_batch=numpy_augmented, name="aug")
    with pytest.raises(WorldSizeResumeMismatch) as failure:
        check(subject, save, load, tmp_path)
    first = str(failure.value).splitlines()[0]
    assert first.startswith("rank 0: numpy's global RNG (np.random) was drawn from during the")
    assert "not in export_state()" in first


def test_a_module_subject_saves_numpy_augmentation_and_resumes(tmp_path) -> None:
    check(ModuleSubject(small_model, make_batch=numpy_augmented), 2, 1, tmp_path)


class PerRankNoise(ModuleSubjectSystem):
    """Each rank scales its loss by noise from a generator of its own, which its rank state
    leaves out (a replayed build would advance it exactly as the saved run did)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.noise = torch.Generator().manual_seed(1000)
        super().__init__(*args, **kwargs)

    def step(self):
        scale = 1.0 + float(torch.rand((), generator=self.noise))
        weight = self.parallel.grad_weight * scale
        return self.subject.step(self.system, loss_weight=weight)


class NoisySubject(ModuleSubject):
    def build_distributed(self, *, grid, stage, seed, parallel, fresh=False):
        return PerRankNoise(self, parallel, seed, stage, fresh=fresh)


@pytest.mark.slow
def test_an_unsaved_per_rank_generator_fails_at_2_to_1_naming_it(tmp_path) -> None:
    subject = NoisySubject(small_model, make_batch=numpy_augmented)
    with pytest.raises(WorldSizeResumeMismatch) as failure:
        check(subject, 2, 1, tmp_path)
    first = str(failure.value).splitlines()[0]
    assert first.startswith("rank 0: system.noise (a torch.Generator) advanced during the step")
