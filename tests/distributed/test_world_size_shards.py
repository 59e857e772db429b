"""`ModuleSubject(..., rank_shards=True)` under the world-size check: each rank reads its own
shard (its generator seeded by its rank) and resumes exactly; a data position saved once for
all ranks (in the replicated app state, as "rank 0 saves the sampler") passes while every rank
reads the same batch, and fails, naming the rank, once each rank reads its own."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from pytest_ckpt import ModuleSubject
from pytest_ckpt.distributed.module_system import ModuleSubjectSystem
from pytest_ckpt.distributed.world_size import check_world_size_resume
from pytest_ckpt.errors import WorldSizeResumeMismatch
from tests.distributed.conftest import small_model


def batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(8, 4, generator=generator), torch.randn(8, 1, generator=generator)


def check(subject: Any, save: int, load: int, workdir):
    return check_world_size_resume(
        subject, stage="TRAINING", grid=(1, 1), save_world_size=save, load_world_size=load,
        steps=2, workdir=workdir, timeout=120,
    )  # fmt: skip


def test_each_rank_reads_its_own_shard_and_resumes_exactly_at_another_world_size(tmp_path):
    subject = ModuleSubject(small_model, make_batch=batch, rank_shards=True, name="sharded")
    result = check(subject, 2, 1, tmp_path)
    rank0, rank1 = ([r["metrics"]["loss"] for r in records] for records in result.continued)
    assert all(a != b for a, b in zip(rank0, rank1, strict=True))  # two shards, not one batch


def test_rank_shards_need_make_batch() -> None:
    with pytest.raises(ValueError, match="rank_shards=True shards make_batch's generator"):
        ModuleSubject(small_model, make_loader=lambda g: None, rank_shards=True)


class GeneratorInAppState(ModuleSubjectSystem):
    """The planted flaw: the data generator in the replicated state DCP saves once (rank 0's),
    restored on every rank; nothing saved per rank."""

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "generator": self.system["generator"].get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.system["generator"].set_state(state["generator"])

    def rank_state(self) -> dict[str, Any]:
        return {}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        pass


class SavesTheDataPositionOnce(ModuleSubject):
    def build_distributed(self, *, grid, stage, seed, parallel, fresh=False):
        return GeneratorInAppState(self, parallel, seed, stage, fresh=fresh)


def test_a_data_position_saved_once_passes_one_batch_and_fails_per_rank_shards(tmp_path):
    check(SavesTheDataPositionOnce(small_model, make_batch=batch), 2, 2, tmp_path / "same")
    sharded = SavesTheDataPositionOnce(small_model, make_batch=batch, rank_shards=True)
    with pytest.raises(WorldSizeResumeMismatch) as failure:
        check(sharded, 2, 2, tmp_path / "shards")
    first = str(failure.value).splitlines()[0]
    # DCP writes one copy of a replicated tensor, from the rank it picks: so the other differs
    assert re.match(r"rank [01]: system\.system\['generator'\] \(a torch\.Generator\) adv", first)
    assert "holds its state at root['app']['generator']" in first
