"""`LightningSubject`: a `LightningModule`, trained by its own `configure_optimizers` and
`training_step`, checkpointed as `Trainer.save_checkpoint` writes it, as a Subject.

    LightningSubject(
        lambda: MyLitModel(hidden=16),
        make_batch=lambda g: (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)),
        stages={"WARMUP": 2, "DECAY": 6},
    )

A step is what Lightning's automatic optimization does for one batch: the callbacks' and the
module's `on_train_batch_start`, `training_step(batch, batch_idx)`, backward,
`optimizer.step()`, each scheduler when its `interval` ("step", or "epoch" every
`steps_per_epoch` steps) and `frequency` say, then the callbacks' and the module's
`on_train_batch_end`. Callbacks are the module's `configure_callbacks()` and `make_callbacks()`.

The export is the dict Lightning's `_CheckpointConnector.dump_checkpoint` makes: `epoch`,
`global_step`, `pytorch-lightning_version`, `state_dict`, `callbacks` (each stateful
callback's `state_dict()` under its `state_key`), `optimizer_states`, `lr_schedulers`,
`hyper_parameters` (`self.hparams`: a dataclass, Path, Enum or module there makes a `.ckpt`
refuse to load with `weights_only=True`), then whatever the callbacks' and the module's
`on_save_checkpoint` add. `rebuild` restores it in the order of a `ckpt_path` resume: the
module's `on_load_checkpoint`, its `state_dict` (strict), the callbacks' `on_load_checkpoint`
and `load_state_dict`, the optimizer, the schedulers. What the harness needs beyond that (the
batch generator, the global RNGs, the step count, the seed) is kept under `pytest_ckpt`; the
fit loop's progress (`loops`) exists only under a real Trainer, which this mode does not run.

Data from a real DataLoader instead: `make_loader(generator)` (`lightning_data`). Every step
then reports the indices it read (`StepResult.samples`), and the loader resumes as Lightning
resumes it: a stateful loader (torchdata's `StatefulDataLoader`) from the `state_dict()` kept
where Lightning keeps it (`loops.fit_loop.state_dict.combined_loader`, the only part of `loops`
written here); a plain one from the start of its epoch, so a mid-epoch resume reads samples
twice and fails with the data order, as the user's own resume does.

`native=True` runs Lightning itself instead (`lightning_native`): a real `Trainer.fit`,
`Trainer.save_checkpoint` and `fit(ckpt_path=...)` resume, `loops` included, so what is proven
is the user's own save and resume path; one fit per step (about 0.1-0.3 s on CPU).

No Trainer is needed: `self.log` without one is a no-op, and callbacks receive a
`TrainerView` (`global_step`, `current_epoch`, `lightning_module`, `callbacks`) where Lightning
passes its Trainer. Importing this module does not import lightning; making a subject without
it installed raises an ImportError naming the package (`pip install lightning`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_ckpt.adapters import require
from pytest_ckpt.adapters.module import ModuleSubject
from pytest_ckpt.adapters.rngs import global_rng_state, restore_global_rng_state
from pytest_ckpt.errors import SubjectError

if TYPE_CHECKING:  # lightning is optional: imported when a subject is made (require)
    import torch
    from lightning.pytorch import Callback, LightningModule

    from pytest_ckpt.adapters.lightning_data import LightningLoader

HARNESS_KEY = "pytest_ckpt"  # what the harness keeps beside Lightning's own keys


@dataclass(slots=True, frozen=True)
class TrainerView:
    """What a callback hook reads from its `trainer` argument, without a Trainer."""

    global_step: int
    current_epoch: int
    lightning_module: Any
    callbacks: list[Any]
    is_global_zero: bool = True


class LightningSubject(ModuleSubject):
    """A `LightningModule` made by `make_module()`; batches from `make_batch(generator)` or
    from the DataLoader `make_loader(generator)` makes (its steps report their samples);
    extra callbacks from `make_callbacks()` (beside the module's `configure_callbacks()`)."""

    def __init__(
        self,
        make_module: Callable[[], LightningModule],
        *,
        make_batch: Callable[[torch.Generator], Any] | None = None,
        make_loader: Callable[[torch.Generator], Iterable[Any]] | None = None,
        make_callbacks: Callable[[], Sequence[Callback]] | None = None,
        stages: Mapping[str, int] | None = None,
        warmup_steps: int = 2,
        steps_per_epoch: int | None = None,
        probe: bool = True,
        native: bool = False,
        name: str = "lightning",
    ) -> None:
        """`native=True`: every run is a real `Trainer.fit`, saved by `Trainer.save_checkpoint`
        and resumed by `fit(ckpt_path=...)` (see `lightning_native`); slower, one fit a step.
        `make_loader(generator)`: a DataLoader instead of `make_batch` (`lightning_data`); an
        epoch is then its length (`steps_per_epoch`, when given, must agree)."""
        self.lightning = require("lightning.pytorch", "lightning", "LightningSubject")
        self.native = native
        self.epoch_given = steps_per_epoch
        super().__init__(
            make_module,
            make_batch=make_batch,
            make_loader=make_loader,
            stages=stages,
            warmup_steps=warmup_steps,
            steps_per_epoch=1 if steps_per_epoch is None else steps_per_epoch,
            probe=probe,
            name=name,
        )
        self.make_callbacks = make_callbacks
        # what a data-order failure advises (checks.samples), measured under Lightning 2.6.6
        self.data_order_fix = (
            "Lightning restarts a plain DataLoader's epoch when it resumes mid-epoch and saves "
            "no loader generator: checkpoint at epoch ends with a sampler whose order set_epoch "
            "sets (DistributedSampler), or use torchdata's StatefulDataLoader (Lightning saves "
            "its position in the fit loop) with such a sampler"
        )
        # id(scheduler) -> (interval, frequency), set when configure_optimizers made it: every
        # scheduler a system holds was made (and registered) by make_training_state.
        self._intervals: dict[int, tuple[str, int]] = {}

    # ---- native mode: Lightning's own fit, save_checkpoint and ckpt_path resume ----------

    def build(self, *, grid: Any, stage: str, seed: int) -> Any:
        if not self.native:
            return super().build(grid=grid, stage=stage, seed=seed)
        from pytest_ckpt.adapters.lightning_native import native_fit

        return native_fit(self, seed=seed, steps=self.steps_to(stage), resume=None)

    def step(self, system: Any, *, loss_weight: float = 1.0) -> Any:
        if not self.native:
            return super().step(system, loss_weight=loss_weight)
        from pytest_ckpt.adapters.lightning_native import native_step

        return native_step(self, system)

    def make_training_state(self, model: Any) -> tuple[Any, list[Any], Any]:
        optimizers, schedulers = _unpack(model.configure_optimizers())
        if len(optimizers) != 1:
            raise SubjectError(
                f"{self.name}: configure_optimizers() gave {len(optimizers)} optimizers; "
                "LightningSubject drives one (automatic optimization)"
            )
        for scheduler, interval, frequency in schedulers:
            self._intervals[id(scheduler)] = (interval, frequency)
        return optimizers[0], [s for s, _, _ in schedulers], None

    def _fresh(self, seed: int, state: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        if self.native and kwargs.get("parallelize") is not None:
            raise SubjectError(
                f"{self.name}: native mode runs Lightning's own Trainer in one process; the "
                "world-size check needs LightningSubject(..., native=False)"
            )
        system = super()._fresh(seed, state, **kwargs)
        own = lightning_module(system["model"]).configure_callbacks()
        own = [] if own is None else list(own) if isinstance(own, Sequence) else [own]
        extra = list(self.make_callbacks()) if self.make_callbacks is not None else []
        system["callbacks"] = own + extra
        return system

    def _loader(self, seed: int) -> LightningLoader:
        """The loader `make_loader` makes for `seed`, as Lightning reads and resumes it; its
        length is the epoch."""
        import torch

        from pytest_ckpt.adapters.lightning_data import LightningLoader

        assert self.make_loader is not None  # called only when there is one
        made = LightningLoader(self.make_loader(torch.Generator().manual_seed(seed)))
        if self.epoch_given is not None and self.epoch_given != made.length:
            raise SubjectError(
                f"{self.name}: steps_per_epoch={self.epoch_given} but make_loader() gave "
                f"{made.length} batches an epoch: leave steps_per_epoch out with a loader"
            )
        self.steps_per_epoch = made.length
        return made

    def trainer_view(self, system: Mapping[str, Any]) -> TrainerView:
        steps = system["steps"]
        epoch = steps // self.steps_per_epoch
        return TrainerView(steps, epoch, lightning_module(system["model"]), system["callbacks"])

    # ---- the checkpoint, as Trainer.save_checkpoint and a ckpt_path resume do it ----------

    def export_state(self, system: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.native:
            from pytest_ckpt.adapters.lightning_native import native_export

            return native_export(system)
        model, view = system["model"], self.trainer_view(system)
        checkpoint: dict[str, Any] = {
            "epoch": view.current_epoch,
            "global_step": view.global_step,
            "pytorch-lightning_version": self.lightning.__version__,
            "state_dict": model.state_dict(),
            "callbacks": {
                cb.state_key: state for cb in system["callbacks"] if (state := cb.state_dict())
            },
            "optimizer_states": [system["optimizer"].state_dict()],
            "lr_schedulers": [s.state_dict() for s in system["schedulers"]],
        }
        if system["loader"] is not None and (kept := system["loader"].state_dict()):
            checkpoint["loops"] = {"fit_loop": {"state_dict": kept}}  # where Lightning keeps it
        if model.hparams:
            if hasattr(model, "_hparams_name"):
                checkpoint[model.CHECKPOINT_HYPER_PARAMS_NAME] = model._hparams_name
            checkpoint[model.CHECKPOINT_HYPER_PARAMS_KEY] = dict(model.hparams)
        for callback in system["callbacks"]:
            callback.on_save_checkpoint(view, model, checkpoint)
        model.on_save_checkpoint(checkpoint)
        checkpoint[HARNESS_KEY] = {
            "generator": system["generator"].get_state(),
            **global_rng_state(),
            "steps": system["steps"],
            "seed": system["seed"],
        }
        return checkpoint

    def rebuild(self, state: Mapping[str, Any]) -> Any:
        """A fresh system restored from a checkpoint dict (as torch.load returned it)."""
        if self.native:
            from pytest_ckpt.adapters.lightning_native import native_rebuild

            return native_rebuild(self, state)
        harness = state[HARNESS_KEY]
        system = self._fresh(harness["seed"], state)
        system["steps"] = harness["steps"]
        model, view = system["model"], self.trainer_view(system)
        checkpoint = dict(state)  # the hooks may change it, as they may Lightning's
        model.on_load_checkpoint(checkpoint)
        model.load_state_dict(checkpoint["state_dict"], strict=True)
        saved_callbacks = checkpoint.get("callbacks") or {}
        for callback in system["callbacks"]:
            callback.on_load_checkpoint(view, model, checkpoint)
        for callback in system["callbacks"]:
            if saved_callbacks.get(callback.state_key):
                callback.load_state_dict(copy.deepcopy(saved_callbacks[callback.state_key]))
        _load_all([system["optimizer"]], checkpoint, "optimizer_states")
        _load_all(system["schedulers"], checkpoint, "lr_schedulers")
        if system["loader"] is not None:
            fit_loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
            epoch, batches = divmod(system["steps"], self.steps_per_epoch)
            system["loader"].load_state_dict({**fit_loop, "epoch": epoch, "batches": batches})
        system["generator"].set_state(harness["generator"])
        restore_global_rng_state(harness)
        return system

    # ---- one step of automatic optimization ---------------------------------------------

    def training_loss(self, system: Mapping[str, Any], batch: Any) -> Any:
        import torch

        view = self.trainer_view(system)
        model = view.lightning_module
        batch_idx = system["steps"] % self.steps_per_epoch
        for callback in system["callbacks"]:
            callback.on_train_batch_start(view, model, batch, batch_idx)
        model.on_train_batch_start(batch, batch_idx)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*self.log.*", category=UserWarning)
            output = _redirected(system["model"], model, "training_step", batch, batch_idx)
        return output if isinstance(output, torch.Tensor) else output["loss"]

    def step_schedulers(self, system: Mapping[str, Any], loss: float) -> None:
        import torch

        for scheduler in system["schedulers"]:
            interval, frequency = self._intervals.get(id(scheduler), ("epoch", 1))
            period = frequency * (self.steps_per_epoch if interval == "epoch" else 1)
            if system["steps"] % period == 0:
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(loss)
                else:
                    scheduler.step()

    def after_step(self, system: Mapping[str, Any], batch: Any, loss: Any) -> None:
        """`on_train_batch_end`, with the outputs Lightning passes (`{"loss": ...}`); the
        batch index is the one `training_step` had."""
        view = self.trainer_view({**system, "steps": system["steps"] - 1})
        model = view.lightning_module
        batch_idx = (system["steps"] - 1) % self.steps_per_epoch
        outputs = {"loss": loss.detach()}
        for callback in system["callbacks"]:
            callback.on_train_batch_end(view, model, outputs, batch, batch_idx)
        model.on_train_batch_end(outputs, batch, batch_idx)


def lightning_module(model: Any) -> Any:
    """The LightningModule itself: under DDP (pytest_ckpt.distributed) the system holds its
    wrapper; FSDP2 shards in place."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def _redirected(wrapper: Any, module: Any, method: str, *args: Any) -> Any:
    """`module.<method>(*args)` called through `wrapper(...)`, as Lightning's strategies call
    `training_step`: the forward hooks of FSDP2 (which gathers the sharded parameters) and
    DDP (which prepares the gradient reduction) run only for a call of the module itself."""
    had_own = "forward" in vars(module)
    original = module.forward

    def forward(*inner: Any) -> Any:
        _put_back(module, original, had_own)  # the method may call the real forward
        return getattr(module, method)(*inner)

    module.forward = forward
    try:
        return wrapper(*args)
    finally:
        _put_back(module, original, had_own)


def _put_back(module: Any, original: Any, had_own: bool) -> None:
    if had_own:
        module.forward = original
    else:
        vars(module).pop("forward", None)


def _load_all(objects: Sequence[Any], checkpoint: Mapping[str, Any], key: str) -> None:
    saved = list(checkpoint.get(key, ()))
    if len(saved) != len(objects):
        raise SubjectError(
            f"the checkpoint's {key!r} holds {len(saved)} state(s); configure_optimizers() "
            f"made {len(objects)}"
        )
    for target, target_state in zip(objects, saved, strict=True):
        target.load_state_dict(target_state)


def _unpack(configured: Any) -> tuple[list[Any], list[tuple[Any, str, int]]]:
    """configure_optimizers()'s forms: an optimizer; a list of them; (optimizers, schedulers);
    a dict {"optimizer", "lr_scheduler"} (a scheduler or a dict with "scheduler", "interval",
    "frequency"); a list of such dicts."""
    import torch

    if isinstance(configured, torch.optim.Optimizer):
        return [configured], []
    if isinstance(configured, Mapping):
        configured = [configured]
    if (
        isinstance(configured, (list, tuple))
        and len(configured) == 2
        and isinstance(configured[0], (list, tuple))
    ):
        optimizers, schedulers = list(configured[0]), configured[1]
        schedulers = schedulers if isinstance(schedulers, (list, tuple)) else [schedulers]
        return optimizers, [_scheduler_config(s) for s in schedulers]
    if isinstance(configured, Sequence):
        optimizers = []
        found: list[tuple[Any, str, int]] = []
        for entry in configured:
            if isinstance(entry, Mapping):
                optimizers.append(entry["optimizer"])
                if entry.get("lr_scheduler") is not None:
                    found.append(_scheduler_config(entry["lr_scheduler"]))
            else:
                optimizers.append(entry)
        return optimizers, found
    raise SubjectError(f"configure_optimizers() returned {type(configured).__name__}")


def _scheduler_config(entry: Any) -> tuple[Any, str, int]:
    if isinstance(entry, Mapping):
        return entry["scheduler"], entry.get("interval", "epoch"), int(entry.get("frequency", 1))
    return entry, "epoch", 1
