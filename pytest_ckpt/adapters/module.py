"""`ModuleSubject`: a plain `nn.Module` with the training state real projects have, as a Subject.

    ModuleSubject(
        MyNet,
        make_batch=lambda g: (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)),
        make_optimizer=lambda model: torch.optim.AdamW(model.parameters(), lr=1e-3),
        make_schedulers=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3),
        stages={"WARMUP": 2, "DECAY": 6},
    )

The system is a dict: `model`, `optimizer`, `schedulers` (a list), `scaler` (or None), the
`generator` batches are drawn from, `steps` and `seed`. A step is one optimizer step on
`make_batch(generator)`; then every scheduler steps (a timm-style scheduler, one with
`step_update`, as timm's loop drives it: `step_update(num_updates)` after every step and
`step(epoch)` at the end of every `steps_per_epoch` steps). Stages are the project's own
phase names, each reached by that many steps from a fresh model (at least one: an empty
optimizer state would hide an optimizer that the checkpoint drops). The export holds the
state_dict of everything above plus the states of the generator and of the global torch,
Python and numpy RNGs (a model's dropout, a batch's augmentation), so a resumed step is
exactly the continued one.

Data from a real `torch.utils.data.DataLoader` instead of `make_batch`: `make_loader(generator)`
returns one (pass it `generator=generator` for its shuffle; `num_workers` as the project has
it; torchdata's `StatefulDataLoader` too). The system then holds its position
(`adapters.loaders.LoaderPosition`), the export holds what restores it (the epoch, the batches
consumed in it and the generator state the epoch was drawn from; a StatefulDataLoader's
`state_dict()`), and every step reports the dataset indices it read (`StepResult.samples`),
which the resume check compares.

Batches: a mapping is passed as keyword arguments (`model(**batch)`, as transformers models
take them); a pair is `(inputs, targets)` (`model(inputs)`); anything else is `model(batch)`.
The loss is `loss_fn(output, targets)` (`loss_fn(output, batch)` without targets), else the
output's own `loss` (a transformers `ModelOutput`, a dict with "loss"), else MSE to targets.

The forward probe (`probe`): the model's output in eval mode on one fixed batch, which the
round-trip check compares between the live and the rebuilt system. Every global RNG is seeded
for it and put back after, so the probe batch is the same on every call and probing changes
nothing a step reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from pytest_ckpt.adapters.rngs import (
    global_rng_state,
    isolated_global_rngs,
    restore_global_rng_state,
    seed_global_rngs,
)
from pytest_ckpt.errors import SubjectError
from pytest_ckpt.subject import StepResult
from pytest_ckpt.vocabulary import Grid

if TYPE_CHECKING:  # imported when a subject is made: importing pytest_ckpt stays cheap
    import torch
    from torch import nn

    from pytest_ckpt.adapters.loaders import LoaderPosition

PROBE_SEED = 20_240_601  # the probe batch is the same for every system and every run
_STAGE_NAME_HELP = "stage names are words like WARMUP or DECAY (letters, digits, _)"


class Scheduler(Protocol):
    """What ModuleSubject needs of a learning-rate scheduler: torch's (ReduceLROnPlateau
    included) and timm's have it. How it steps is read at run time (`step_schedulers`)."""

    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any], /) -> None: ...


# `make_schedulers(optimizer)` returns one scheduler or a sequence of them.
Schedulers: TypeAlias = "Scheduler | Sequence[Scheduler]"


class ModuleSubject:
    """A plain `nn.Module` + optimizer (+ schedulers, GradScaler) as a `pytest_ckpt.Subject`.

    `make_model()` builds the model (under a seeded, forked global RNG); `make_batch(g)` draws
    a batch from the `torch.Generator` g; `make_optimizer(model)` (default Adam, lr=1e-3),
    `make_loader(g)` instead builds a DataLoader shuffled by g (module docstring);
    `make_schedulers(optimizer)` (one scheduler or a sequence) and `make_scaler()` (a
    `torch.amp.GradScaler`) are optional; `steps_per_epoch` is when a scheduler's epoch ends
    (for per-epoch timm-style schedulers). `stages` maps each phase name to the number of steps
    that reaches it (default `{"TRAINING": warmup_steps}`). `probe=False` turns the forward
    probe off. Grids do not apply (`supports_grids = False`).
    """

    supports_grids = False

    def __init__(
        self,
        make_model: Callable[[], nn.Module],
        *,
        make_batch: Callable[[torch.Generator], Any] | None = None,
        make_loader: Callable[[torch.Generator], Iterable[Any]] | None = None,
        make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
        make_schedulers: Callable[[torch.optim.Optimizer], Schedulers] | None = None,
        make_scaler: Callable[[], torch.amp.GradScaler] | None = None,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
        stages: Mapping[str, int] | None = None,
        warmup_steps: int = 2,
        steps_per_epoch: int = 1,
        probe: bool = True,
        rank_shards: bool = False,
        name: str = "module",
    ) -> None:
        self.make_model = make_model
        if (make_batch is None) == (make_loader is None):
            raise ValueError(
                "give ModuleSubject one source of batches: make_batch(generator) or "
                "make_loader(generator) (a DataLoader)"
            )
        self.make_batch = make_batch
        self.make_loader = make_loader
        self.make_optimizer = make_optimizer
        self.make_schedulers = make_schedulers
        self.make_scaler = make_scaler
        self.loss_fn = loss_fn
        self.stage_steps = dict(stages) if stages is not None else {"TRAINING": warmup_steps}
        self.steps_per_epoch = steps_per_epoch
        self.use_probe = probe
        self.rank_shards = rank_shards
        self.name = name
        if rank_shards and make_loader is not None:
            raise ValueError(
                "rank_shards=True shards make_batch's generator by rank; a DataLoader shards "
                "with its own sampler (DistributedSampler): give make_batch instead"
            )
        _check_stage_steps(self.stage_steps)
        if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int):
            raise ValueError(f"steps_per_epoch must be an int >= 1, got {steps_per_epoch!r}")
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be an int >= 1, got {steps_per_epoch!r}")

    # ---- the Subject protocol -----------------------------------------------------------

    def stages(self) -> Sequence[str]:
        return tuple(sorted(self.stage_steps, key=lambda s: self.stage_steps[s]))

    def steps_to(self, stage: str) -> int:
        """The steps from a fresh system to `stage`; a ValueError naming the stages it has."""
        if stage not in self.stage_steps:
            stages = ", ".join(self.stages())
            raise ValueError(f"{self.name} has the stages {stages}, not {stage!r}")
        return self.stage_steps[stage]

    def build(self, *, grid: Grid, stage: str, seed: int) -> Any:
        steps = self.steps_to(stage)
        system = self._fresh(seed)
        seed_global_rngs(seed)  # the state captures the global RNGs: do not inherit history
        for _ in range(steps):
            self.step(system)
        return system

    def export_state(self, system: Mapping[str, Any]) -> Mapping[str, Any]:
        state: dict[str, Any] = {
            "model": system["model"].state_dict(),
            "optimizer": system["optimizer"].state_dict(),
        }
        if system["schedulers"]:
            state["schedulers"] = [s.state_dict() for s in system["schedulers"]]
        if system["scaler"] is not None:
            state["scaler"] = system["scaler"].state_dict()
        state["generator"] = system["generator"].get_state()
        if system.get("loader") is not None:
            state["loader"] = system["loader"].state_dict()
        state.update(global_rng_state(), steps=system["steps"], seed=system["seed"])
        return state

    def rebuild(self, state: Mapping[str, Any]) -> Any:
        """A fresh system loaded from `state`. The schedulers exist before the optimizer's
        state is loaded: creating a scheduler sets the learning rate, which would otherwise
        overwrite the loaded one."""
        system = self._fresh(state["seed"], state)
        system["model"].load_state_dict(state["model"], strict=True)
        system["optimizer"].load_state_dict(state["optimizer"])
        saved = list(state.get("schedulers", ()))
        if len(saved) != len(system["schedulers"]):
            raise SubjectError(
                f"the checkpoint holds {len(saved)} scheduler state(s), make_schedulers "
                f"made {len(system['schedulers'])}"
            )
        for scheduler, scheduler_state in zip(system["schedulers"], saved, strict=True):
            scheduler.load_state_dict(scheduler_state)
        if system["scaler"] is not None:
            system["scaler"].load_state_dict(state["scaler"])
        system["generator"].set_state(state["generator"])
        if system.get("loader") is not None:
            system["loader"].load_state_dict(state["loader"])
        restore_global_rng_state(state)
        system["steps"] = state["steps"]
        return system

    def step(self, system: dict[str, Any], *, loss_weight: float = 1.0) -> StepResult:
        """One optimizer step. `loss_weight` scales what is back-propagated, not the reported
        loss (under pytest_ckpt.distributed only rank 0's batch contributes a gradient)."""
        model, optimizer, scaler = system["model"], system["optimizer"], system["scaler"]
        batch, samples = self.next_batch(system)
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = self.training_loss(system, batch)
        weighted = loss if loss_weight == 1.0 else loss * loss_weight
        if scaler is not None:
            scaler.scale(weighted).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            weighted.backward()
            optimizer.step()
        value = float(loss.detach())
        system["steps"] += 1
        self.step_schedulers(system, value)
        self.after_step(system, batch, loss)
        metrics: dict[str, Any] = {"loss": value, "lr": float(optimizer.param_groups[0]["lr"])}
        if scaler is not None:
            metrics["scale"] = float(scaler.get_scale())
        telemetry = [{"event": "step", "step": system["steps"]}]
        return StepResult(metrics=metrics, telemetry=telemetry, samples=samples)

    def next_batch(self, system: Mapping[str, Any]) -> tuple[Any, list[Any] | None]:
        """The step's batch and the ids of its samples (None from `make_batch`)."""
        if system.get("loader") is None:
            assert self.make_batch is not None  # __init__: make_batch when no make_loader
            return self.make_batch(system["generator"]), None
        batch_and_ids: tuple[Any, list[Any] | None] = system["loader"].next_batch()
        return batch_and_ids

    def probe(self, system: Mapping[str, Any]) -> Any:
        """The model's output (tensors only) in eval mode on the fixed probe batch; the global
        RNGs are seeded for it and restored after, so probing changes nothing a step reads."""
        import torch

        if not self.use_probe:
            return None
        model = system["model"]
        was_training = model.training
        with isolated_global_rngs(PROBE_SEED), torch.no_grad():
            batch = self._probe_batch()
            model.eval()
            try:
                return tensors_only(self.forward(model, batch))
            finally:
                model.train(was_training)

    def _probe_batch(self) -> Any:
        import torch

        generator = torch.Generator().manual_seed(PROBE_SEED)
        if self.make_loader is not None:
            return next(iter(self.make_loader(generator)))
        assert self.make_batch is not None  # __init__: make_batch when no make_loader
        return self.make_batch(generator)

    # ---- pieces a subclass (an adapter) may change --------------------------------------

    def training_loss(self, system: Mapping[str, Any], batch: Any) -> Any:
        """The loss tensor of one training step on `batch` (the model is in train mode)."""
        return self.loss_of(self.forward(system["model"], batch), batch)

    def step_schedulers(self, system: Mapping[str, Any], loss: float) -> None:
        """Every scheduler, after the optimizer step (`system["steps"]` already counts it)."""
        steps = system["steps"]
        epoch_ended = steps % self.steps_per_epoch == 0
        for scheduler in system["schedulers"]:
            if callable(getattr(scheduler, "step_update", None)):  # timm's Scheduler API
                scheduler.step_update(num_updates=steps)
                if epoch_ended:
                    scheduler.step(steps // self.steps_per_epoch)
            else:  # a torch scheduler steps every step, ReduceLROnPlateau on the loss
                _step_scheduler(scheduler, loss)

    def after_step(self, system: Mapping[str, Any], batch: Any, loss: Any) -> None:
        """Called at the end of each step, after the schedulers (for an adapter's hooks)."""

    def forward(self, model: Any, batch: Any) -> Any:
        if isinstance(batch, Mapping):
            return model(**batch)
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            return model(batch[0])
        return model(batch)

    def loss_of(self, output: Any, batch: Any) -> Any:
        targets = batch[1] if isinstance(batch, (tuple, list)) and len(batch) == 2 else None
        if self.loss_fn is not None:
            return self.loss_fn(output, batch if targets is None else targets)
        own = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
        if own is not None:
            return own
        if targets is None:
            raise SubjectError(
                f"{self.name}: the model's output has no loss and the batch no targets: "
                "give ModuleSubject a loss_fn(output, batch)"
            )
        import torch.nn.functional as F

        return F.mse_loss(output, targets)

    def make_training_state(self, model: Any) -> tuple[Any, list[Any], Any]:
        """The optimizer, schedulers and scaler for a fresh `model`."""
        import torch

        optimizer = (
            self.make_optimizer(model)
            if self.make_optimizer is not None
            else torch.optim.Adam(model.parameters(), lr=1e-3)
        )
        made = self.make_schedulers(optimizer) if self.make_schedulers is not None else ()
        schedulers = list(made) if isinstance(made, (list, tuple)) else [made]
        scaler = self.make_scaler() if self.make_scaler is not None else None
        return optimizer, schedulers, scaler

    def make_model_for(self, state: Mapping[str, Any]) -> Any:
        """The model `rebuild` loads `state` into: `make_model()` here; an adapter whose
        checkpoint saves the model's structure (a config) builds it from that."""
        return self.make_model()

    def _loader(self, seed: int) -> LoaderPosition:
        import torch

        from pytest_ckpt.adapters.loaders import LoaderPosition

        assert self.make_loader is not None  # called only when there is one (_fresh)
        return LoaderPosition(self.make_loader(torch.Generator().manual_seed(seed)))

    def _fresh(
        self,
        seed: int,
        state: Mapping[str, Any] | None = None,
        *,
        parallelize: Callable[[Any], Any] | None = None,
    ) -> dict[str, Any]:
        """A system before any step. `parallelize` (pytest_ckpt.distributed) shards the model
        before the optimizer is made from its parameters."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.make_model() if state is None else self.make_model_for(state)
            # a torchdata RandomSampler without a generator draws its seed when made
            loader = None if self.make_loader is None else self._loader(seed)
        if parallelize is not None:
            model = parallelize(model)
        optimizer, schedulers, scaler = self.make_training_state(model)
        return {
            "model": model,
            "optimizer": optimizer,
            "schedulers": schedulers,
            "scaler": scaler,
            "generator": torch.Generator().manual_seed(seed),
            "loader": loader,
            "steps": 0,
            "seed": seed,
        }


def tensors_only(output: Any) -> Any:
    """The tensors of a model's output, in its structure: a `ModelOutput` or dict becomes a
    dict, tuples and lists stay, anything else (a cache object, None) is left out."""
    import torch

    if isinstance(output, torch.Tensor):
        return output.detach().clone()
    if isinstance(output, Mapping):
        kept = {str(k): tensors_only(v) for k, v in output.items()}
        return {k: v for k, v in kept.items() if v is not None}
    if isinstance(output, (tuple, list)):
        kept_items = [tensors_only(v) for v in output]
        return [v for v in kept_items if v is not None] or None
    return None


def _step_scheduler(scheduler: Any, loss: float) -> None:
    import torch

    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(loss)
    else:
        scheduler.step()


def _check_stage_steps(stage_steps: Mapping[str, int]) -> None:
    import re

    if not stage_steps:
        raise ValueError("ModuleSubject needs at least one stage, e.g. stages={'TRAINING': 2}")
    for stage, steps in stage_steps.items():
        if not isinstance(stage, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", stage):
            raise ValueError(f"stage {stage!r}: {_STAGE_NAME_HELP}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(
                f"stage {stage!r} is reached in {steps!r} steps; give an int >= 1: an "
                "optimizer that never stepped has an empty state, which hides a checkpoint "
                "that drops it"
            )
    if len(set(stage_steps.values())) != len(stage_steps):
        raise ValueError(f"two stages are reached in the same number of steps: {stage_steps}")
