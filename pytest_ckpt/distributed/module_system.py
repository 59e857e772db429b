"""`ModuleSubject` under the world-size check, unchanged: its model sharded before its
optimizer is made, its own step with the loss weighted as `protocol` explains, and its
state through `get_state_dict`/`set_state_dict` (optimizer state keyed by parameter name,
so it reshards to any world size).

`ModuleSubject(..., rank_shards=True)`: each rank reads its own shard, from a generator seeded
by the seed and its rank (rank 0's is the single-process one), saved under the rank's own key
like every rank state. Only rank 0's gradient still counts (`protocol`), so training stays
exact at any world size while each rank's data position, loss and samples are its own: a
checkpoint that loses a rank's position fails. A sum of every rank's gradient is what real data
parallelism does, but its order of addition changes with the world size (not bit-exact across
sizes), so the check does not use it. A LOAD rank past SAVE takes the state of rank
`r % SAVE` and so replays that rank's shard: a real resume at more ranks re-shards the data,
which no exact comparison with the continued run can follow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_ckpt.adapters.module import ModuleSubject
from pytest_ckpt.adapters.rngs import global_rng_state, restore_numpy_rng, seed_global_rngs
from pytest_ckpt.distributed.protocol import DistributedSystem, Parallel
from pytest_ckpt.subject import StepResult
from pytest_ckpt.vocabulary import Grid

RANK_SEED_STRIDE = 7_919  # rank r's shard generator: seed + stride * r


class ModuleSubjectSystem:
    """One rank's `ModuleSubject` system, sharded, driven to its stage (that stage's steps)."""

    def __init__(
        self,
        subject: ModuleSubject,
        parallel: Parallel,
        seed: int,
        stage: str | None = None,
        *,
        fresh: bool = False,
    ) -> None:
        """`stage`: one of the subject's stages (default: its first). `fresh`: no step taken
        (what the load ranks start from: everything else must come from the checkpoint)."""
        self.subject = subject
        self.parallel = parallel
        self.system = subject._fresh(seed, parallelize=parallel.shard)
        if getattr(subject, "rank_shards", False):
            self.system["generator"].manual_seed(seed + RANK_SEED_STRIDE * parallel.rank)
        seed_global_rngs(seed)  # as ModuleSubject.build
        for _ in range(0 if fresh else subject.stage_steps[stage or subject.stages()[0]]):
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
        """The rank's data generator and its numpy global RNG, as ModuleSubject's export holds
        them (the harness adds the torch and Python RNGs)."""
        state = {"generator": self.system["generator"].get_state()}
        numpy_rng = global_rng_state().get("numpy_rng")
        return state if numpy_rng is None else {**state, "numpy_rng": numpy_rng}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        self.system["generator"].set_state(state["generator"])
        if "numpy_rng" in state:
            restore_numpy_rng(state["numpy_rng"])

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
    subject: ModuleSubject,
    *,
    grid: Grid,
    stage: str,
    seed: int,
    parallel: Parallel,
    fresh: bool = False,
) -> DistributedSystem:
    if stage not in subject.stages():
        raise ValueError(
            f"{subject.name} has the stages {', '.join(subject.stages())}, not {stage!r}"
        )
    return ModuleSubjectSystem(subject, parallel, seed, stage, fresh=fresh)
