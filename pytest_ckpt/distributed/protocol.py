"""How a subject runs under the world-size check: the optional `DistributedSubject` protocol.

A subject that can train sharded gives the harness one live `DistributedSystem` per rank
from `build_distributed(grid=, stage=, seed=, parallel=)`, already at `stage`; with `fresh=True`
(passed to a build that takes it) the system before any step, which the load ranks start
from, so that everything they resume with comes from the checkpoint. `ModuleSubject`
needs none of this: `module_system` builds its model and optimizer sharded (a plain model
gets the check for free). A subject asks for DDP instead of FSDP2 with a class attribute
`distributed_strategy = "ddp"`.

Exact comparison across world sizes needs a step whose arithmetic does not depend on the
number of ranks. `Parallel.shard` therefore makes gradient reduction a plain sum (FSDP2 with
a divide factor of 1 and sum-only collectives; DDP with a summing comm hook), and a step
scales its loss by `parallel.grad_weight` (1 on rank 0, 0 elsewhere): every rank runs the
same forward pass on the same batch, rank 0's gradient is the global one, and adding exact
zeros is exact at any world size. With plain averaging of equal gradients only powers of two
are exact (2:3 differs in the last bits).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pytest_ckpt.subject import StepResult
from pytest_ckpt.vocabulary import Grid

STRATEGIES = ("fsdp2", "ddp")


@runtime_checkable
class DistributedSystem(Protocol):
    """One rank's live system. Everything it returns is primitives and tensors."""

    def state_dict(self) -> dict[str, Any]:
        """What DCP saves for the whole system (DTensors for sharded state), as a DCP
        `Stateful` would: typically `get_state_dict(model, optimizer)` plus counters."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from what `dcp.load` filled into a `state_dict()` template
        (typically `set_state_dict`)."""
        ...

    def rank_state(self) -> dict[str, Any]:
        """This rank's own state (its data generator...). The harness adds the rank's torch
        and Python RNG states and saves it all under the rank's own key."""
        ...

    def load_rank_state(self, state: dict[str, Any]) -> None: ...

    def step(self) -> StepResult:
        """One training step on this rank (all ranks step together)."""
        ...

    def full_state(self) -> Mapping[str, Any]:
        """The state as one process would hold it (full tensors, e.g. `get_state_dict` with
        `full_state_dict=True`): what is compared across world sizes."""
        ...


@dataclass(slots=True, frozen=True)
class Parallel:
    """What the harness hands a subject's distributed build for one rank."""

    strategy: str  # "fsdp2" or "ddp"
    rank: int
    world_size: int
    group: Any  # the process group of this run

    @property
    def grad_weight(self) -> float:
        """The factor a step scales its loss by (see the module docstring)."""
        return 1.0 if self.rank == 0 else 0.0

    def shard(self, model: Any) -> Any:
        """`model` made data-parallel over `group`, gradients summed; returns the module to
        use (FSDP2 shards in place; DDP wraps)."""
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(model, process_group=self.group)
            wrapped.register_comm_hook(self.group, _sum_allreduce)
            return wrapped
        from torch.distributed.device_mesh import DeviceMesh
        from torch.distributed.fsdp import fully_shard

        sharded = fully_shard(model, mesh=DeviceMesh.from_group(self.group, "cpu"))
        sharded.set_gradient_divide_factor(1.0)
        sharded.set_force_sum_reduction_for_comms(True)  # gloo has no PREMUL_SUM
        return sharded


def _sum_allreduce(group, bucket):
    """DDP comm hook: sum the gradients (DDP's default divides by the world size). No
    annotations: DDP rejects a hook whose `bucket` is annotated other than GradBucket."""
    import torch.distributed as dist

    work = dist.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda future: future.value()[0])


@runtime_checkable
class DistributedSubject(Protocol):
    """A subject with its own distributed build (optional; see the module docstring)."""

    def build_distributed(
        self, *, grid: Grid, stage: str, seed: int, parallel: Parallel
    ) -> DistributedSystem:
        """Also called with `fresh=True` where the signature takes it (see above)."""
        ...


def strategy_of(subject: Any) -> str:
    strategy = getattr(subject, "distributed_strategy", "fsdp2")
    if strategy not in STRATEGIES:
        raise ValueError(
            f"{type(subject).__name__}.distributed_strategy is {strategy!r}; expected one of "
            f"{', '.join(STRATEGIES)}"
        )
    return strategy
