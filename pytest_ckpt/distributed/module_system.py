"""`ModuleSubject` under the world-size check, unchanged: its model sharded before its
optimizer is made, its own step with the loss weighted as `protocol` explains, and its
state through `get_state_dict`/`set_state_dict` (optimizer state keyed by parameter name,
so it reshards to any world size)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_ckpt.adapters.module import ModuleSubject
from pytest_ckpt.distributed.protocol import DistributedSystem, Parallel
from pytest_ckpt.subject import StepResult
from pytest_ckpt.vocabulary import Grid


class ModuleSubjectSystem:
    """One rank's `ModuleSubject` system, sharded, driven to its stage (that stage's steps)."""

    def __init__(
        self, subject: ModuleSubject, parallel: Parallel, seed: int, stage: str | None = None
    ) -> None:
        """`stage`: one of the subject's stages (default: its first)."""
        import random

        import torch

        self.subject = subject
        self.parallel = parallel
        self.system = subject._fresh(seed, parallelize=parallel.shard)
        torch.manual_seed(seed)  # as ModuleSubject.build
        random.seed(seed)
        for _ in range(subject.stage_steps[stage or subject.stages()[0]]):
            self.step()

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model, optimizer = get_state_dict(self.system["model"], self.system["optimizer"])
        return {"model": model, "optimizer": optimizer, **self._local_training_state()}

    def _local_training_state(self) -> dict[str, Any]:
        """Schedulers and the scaler hold no sharded tensors: their state is the same on
        every rank and saved as it is."""
        state: dict[str, Any] = {"steps": self.system["steps"]}
        if self.system["schedulers"]:
            state["schedulers"] = [s.state_dict() for s in self.system["schedulers"]]
        if self.system["scaler"] is not None:
            state["scaler"] = self.system["scaler"].state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_state_dict

        set_state_dict(
            self.system["model"],
            self.system["optimizer"],
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
        )
        for scheduler, saved in zip(
            self.system["schedulers"], state.get("schedulers", ()), strict=True
        ):
            scheduler.load_state_dict(saved)
        if self.system["scaler"] is not None:
            self.system["scaler"].load_state_dict(state["scaler"])
        self.system["steps"] = state["steps"]

    def rank_state(self) -> dict[str, Any]:
        return {"generator": self.system["generator"].get_state()}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        self.system["generator"].set_state(state["generator"])

    def step(self) -> StepResult:
        return self.subject.step(self.system, loss_weight=self.parallel.grad_weight)

    def full_state(self) -> Mapping[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        model, optimizer = get_state_dict(
            self.system["model"],
            self.system["optimizer"],
            options=StateDictOptions(full_state_dict=True),
        )
        return {"model": model, "optimizer": optimizer, **self._local_training_state()}


def build_module_system(
    subject: ModuleSubject, *, grid: Grid, stage: str, seed: int, parallel: Parallel
) -> DistributedSystem:
    if stage not in subject.stages():
        raise ValueError(
            f"{subject.name} has the stages {', '.join(subject.stages())}, not {stage!r}"
        )
    return ModuleSubjectSystem(subject, parallel, seed, stage)
