"""`LightningSubject`: a `LightningModule`, trained by its own `configure_optimizers` and
`training_step`, as a Subject.

    LightningSubject(
        lambda: MyLitModel(hidden=16),
        make_batch=lambda g: (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)),
        stages={"WARMUP": 2, "DECAY": 6},
    )

A step is what Lightning's automatic optimization does for one batch: `training_step(batch,
batch_idx)`, backward, `optimizer.step()`, then each scheduler steps when its `interval`
("step", or "epoch" every `steps_per_epoch` steps) and `frequency` say. The export is
ModuleSubject's (model, optimizer, schedulers, generator and RNG states) plus
`hyper_parameters`: Lightning saves `self.hparams` in every `.ckpt`, and a dataclass, Path,
Enum or module there is what makes a `.ckpt` refuse to load with `weights_only=True`. No
Trainer is needed; `self.log` without one is a no-op.

Importing this module does not import lightning; making a subject without it installed raises
an ImportError naming the package (`pip install lightning`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_ckpt.adapters import require
from pytest_ckpt.adapters.module import ModuleSubject
from pytest_ckpt.errors import SubjectError
from pytest_ckpt.subject import StepResult


class LightningSubject(ModuleSubject):
    """A `LightningModule` made by `make_module()`; batches from `make_batch(generator)`."""

    def __init__(
        self,
        make_module: Callable[[], Any],
        *,
        make_batch: Callable[[Any], Any],
        stages: Mapping[str, int] | None = None,
        warmup_steps: int = 2,
        steps_per_epoch: int = 1,
        probe: bool = True,
        name: str = "lightning",
    ) -> None:
        require("lightning.pytorch", "lightning", "LightningSubject")
        super().__init__(
            make_module,
            make_batch=make_batch,
            stages=stages,
            warmup_steps=warmup_steps,
            probe=probe,
            name=name,
        )
        self.steps_per_epoch = steps_per_epoch
        # id(scheduler) -> (interval, frequency), set when configure_optimizers made it: every
        # scheduler a system holds was made (and registered) by make_training_state.
        self._intervals: dict[int, tuple[str, int]] = {}

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

    def export_state(self, system: Mapping[str, Any]) -> Mapping[str, Any]:
        state = dict(super().export_state(system))
        state["hyper_parameters"] = dict(getattr(system["model"], "hparams", {}) or {})
        return state

    def step(self, system: Mapping[str, Any]) -> StepResult:
        import torch

        model, optimizer = system["model"], system["optimizer"]
        batch = self.make_batch(system["generator"])
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*self.log.*", category=UserWarning)
            output = model.training_step(batch, system["steps"])
        loss = output if isinstance(output, torch.Tensor) else output["loss"]
        loss.backward()
        optimizer.step()
        system["steps"] += 1
        value = float(loss.detach())
        for scheduler in system["schedulers"]:
            interval, frequency = self._intervals.get(id(scheduler), ("epoch", 1))
            period = frequency * (self.steps_per_epoch if interval == "epoch" else 1)
            if system["steps"] % period == 0:
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(value)
                else:
                    scheduler.step()
        metrics = {"loss": value, "lr": float(optimizer.param_groups[0]["lr"])}
        return StepResult(metrics=metrics, telemetry=[{"event": "step", "step": system["steps"]}])


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
        optimizers: list[Any] = []
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
