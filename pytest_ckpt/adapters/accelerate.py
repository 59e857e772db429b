"""`AccelerateSubject`: a training loop as accelerate users write it, checkpointed by
accelerate itself (`Accelerator.save_state(folder)` / `load_state(folder)`), as a Subject.

    AccelerateSubject(
        lambda: MyNet(),
        make_dataloader=lambda: DataLoader(dataset, batch_size=8, shuffle=True),
        make_optimizer=lambda model: torch.optim.AdamW(model.parameters(), lr=1e-3),
        make_scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3),
        stages={"WARMUP": 2, "DECAY": 6},
    )

The model, optimizer, data loader and scheduler are passed to `Accelerator.prepare` (on CPU by
default; `make_accelerator` gives another). A step is the loop accelerate documents: the next
batch (a new epoch when the loader is exhausted), forward, `accelerator.backward`,
`optimizer.step()`, `scheduler.step()`, `optimizer.zero_grad()`. Batches and the loss are
read as `ModuleSubject` reads them (a mapping is keyword arguments, a pair is inputs and
targets; the output's own loss, else `loss_fn`, else MSE).

Native only: the export is the folder `save_state` writes, read back by `framework_folders`
(each file a value compared by path), plus the harness's seed and step count; `rebuild` makes a
fresh loop from another seed (everything must come from the folder), writes the folder and calls
`load_state`, then skips the batches of the current epoch already read
(`accelerator.skip_first_batches`), as accelerate's resume example does. So what is proven is
the user's own save and resume: what `save_state` leaves out (an attribute, a shuffled
loader's order without `use_seedable_sampler`) fails resume.

`random_states_0.pkl` holds numpy's RNG state, which `torch.load(weights_only=True)` refuses;
accelerate loads it with its own allowlist (`TORCH_SAFE_GLOBALS`). The export names that
refusal (which objects, the fix) under `framework_folders.REFUSED_KEY` and warns once per
subject; `strict=True` makes it an error (the plain `weights_only=True` verdict).

Importing this module does not import accelerate; making a subject without it installed
raises an ImportError naming the package (`pip install accelerate`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_ckpt.adapters import require
from pytest_ckpt.adapters.framework_folders import (  # noqa: F401 (FrameworkFileWarning)
    FILES_KEY,
    REFUSED_KEY,
    FrameworkFileWarning,
    read_folder,
    report_refusals,
    write_folder,
)
from pytest_ckpt.adapters.module import ModuleSubject, Scheduler
from pytest_ckpt.adapters.rngs import (
    global_rng_state,
    restore_global_rng_state,
    seed_global_rngs,
)
from pytest_ckpt.errors import SubjectError
from pytest_ckpt.subject import StepResult
from pytest_ckpt.vocabulary import Grid

if TYPE_CHECKING:  # accelerate is optional: imported when a subject is made (require)
    import torch
    from accelerate import Accelerator
    from torch import nn

NATIVE_KEY = "pytest_ckpt_native"  # the harness's seed and step count, beside the folder
RESUME_SEED_OFFSET = 1_000_003  # a resumed loop's fresh objects: everything from the folder


@dataclass(slots=True)
class LoopParts:
    """The loop's machinery: the accelerator, the prepared loader and the epoch's iterator."""

    accelerator: Any
    dataloader: Any
    batches: Iterator[Any] | None = None


def _hidden(parts: LoopParts) -> Callable[[], LoopParts]:
    """`parts` behind a function: the harness's live-state walks (structure, diagnosis) read
    the model, optimizer and scheduler, not accelerate's internals (its save counter, a
    loader's lazily made generator), which differ between a live and a resumed loop without
    being training state."""
    return lambda: parts


def _parts(system: Mapping[str, Any]) -> LoopParts:
    return system["loop"]()


class AccelerateSubject(ModuleSubject):
    """A model, optimizer, data loader and scheduler prepared by `Accelerator`, saved and
    resumed by `save_state` / `load_state`."""

    def __init__(
        self,
        make_model: Callable[[], nn.Module],
        *,
        make_dataloader: Callable[[], torch.utils.data.DataLoader[Any]],
        make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
        make_scheduler: Callable[[torch.optim.Optimizer], Scheduler] | None = None,
        make_accelerator: Callable[[], Accelerator] | None = None,
        loss_fn: Callable[[Any, Any], Any] | None = None,
        stages: Mapping[str, int] | None = None,
        warmup_steps: int = 2,
        strict: bool = False,
        probe: bool = True,
        name: str = "accelerate",
    ) -> None:
        """`strict=True`: a file of the folder that `torch.load(weights_only=True)` refuses
        fails the check, although accelerate's own loader reads it."""
        self.accelerate = require("accelerate", "accelerate", "AccelerateSubject")
        super().__init__(
            make_model,
            make_batch=self._first_batch,
            make_optimizer=make_optimizer,
            loss_fn=loss_fn,
            stages=stages,
            warmup_steps=warmup_steps,
            probe=probe,
            name=name,
        )
        self.make_dataloader = make_dataloader
        self.make_scheduler = make_scheduler
        self.make_accelerator = make_accelerator
        self.strict = strict
        self._warned = False

    def _first_batch(self, generator: torch.Generator) -> Any:
        """The probe's fixed batch: the first of a fresh loader (the probe seeds the RNGs)."""
        return next(iter(self.make_dataloader()))

    # ---- the Subject protocol -----------------------------------------------------------

    def build(self, *, grid: Grid, stage: str, seed: int) -> Any:
        steps = self.steps_to(stage)
        seed_global_rngs(seed)
        system = self._loop(seed)
        for _ in range(steps):
            self.step(system)
        return system

    def export_state(self, system: Mapping[str, Any]) -> Mapping[str, Any]:
        """What `save_state` writes, read back file by file, and the harness's bookkeeping."""
        with tempfile.TemporaryDirectory() as folder:
            _parts(system).accelerator.save_state(folder)
            state = read_folder(folder)
        if state[REFUSED_KEY]:
            self._report_refused(state[REFUSED_KEY])
        state[NATIVE_KEY] = {"seed": system["seed"], "steps": system["steps"]}
        return state

    def rebuild(self, state: Mapping[str, Any]) -> Any:
        """A fresh loop (from another seed), restored by `load_state` from the folder; the
        batches of the current epoch already read are skipped."""
        harness = state[NATIVE_KEY]
        seed, steps = int(harness["seed"]), int(harness["steps"])
        seed_global_rngs(seed + RESUME_SEED_OFFSET)
        system = self._loop(seed + RESUME_SEED_OFFSET)
        with tempfile.TemporaryDirectory() as folder:
            write_folder(state[FILES_KEY], folder)
            _parts(system).accelerator.load_state(folder)
        system.update(seed=seed, steps=steps)
        loaded_rngs = global_rng_state()
        parts = _parts(system)
        batches = _epoch(parts.dataloader, steps)  # made lazily, at the next step
        done = steps % len(parts.dataloader)
        if done:  # the epoch's batches already read, and the next one, read now
            for _ in range(done):
                next(batches)
            batches = _chained(next(batches), batches)
        parts.batches = batches
        restore_global_rng_state(loaded_rngs)
        return system

    def step(self, system: dict[str, Any], *, loss_weight: float = 1.0) -> StepResult:
        """One step of accelerate's documented loop (`loss_weight` scales the gradient)."""
        accelerator, model, optimizer = (
            _parts(system).accelerator,
            system["model"],
            system["optimizer"],
        )
        batch = self._next_batch(system)
        model.train()
        loss = self.loss_of(self.forward(model, batch), batch)
        accelerator.backward(loss if loss_weight == 1.0 else loss * loss_weight)
        optimizer.step()
        if system["scheduler"] is not None:
            system["scheduler"].step()
        optimizer.zero_grad()
        system["steps"] += 1
        metrics = {"loss": float(loss.detach()), "lr": float(optimizer.param_groups[0]["lr"])}
        return StepResult(metrics=metrics, telemetry=[{"event": "step", "step": system["steps"]}])

    def _fresh(self, seed: int, state: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        """The world-size check's entry (`pytest_ckpt.distributed`): not for this subject."""
        raise SubjectError(
            f"{self.name}: AccelerateSubject runs accelerate's own save_state/load_state in "
            "one process; the world-size check needs a ModuleSubject of the same model"
        )

    # ---- the loop -----------------------------------------------------------------------

    def _loop(self, seed: int) -> dict[str, Any]:
        """A prepared loop before any step: its objects are made under `seed`."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.make_model()
            dataloader = self.make_dataloader()
        optimizer = (
            self.make_optimizer(model)
            if self.make_optimizer is not None
            else torch.optim.AdamW(model.parameters(), lr=1e-3)
        )
        scheduler = self.make_scheduler(optimizer) if self.make_scheduler is not None else None
        accelerator = (
            self.make_accelerator()
            if self.make_accelerator is not None
            else self.accelerate.Accelerator(cpu=True)
        )
        objects = [model, optimizer, dataloader] + ([scheduler] if scheduler is not None else [])
        prepared = accelerator.prepare(*objects)
        return {
            "model": prepared[0],
            "optimizer": prepared[1],
            "scheduler": prepared[3] if scheduler is not None else None,
            "loop": _hidden(LoopParts(accelerator, prepared[2])),
            "steps": 0,
            "seed": seed,
        }

    def _next_batch(self, system: dict[str, Any]) -> Any:
        """The next batch of the epoch, or the first of a new epoch."""
        parts = _parts(system)
        if parts.batches is not None:
            try:
                return next(parts.batches)
            except StopIteration:
                pass
        parts.batches = _epoch(parts.dataloader, system["steps"])
        return next(parts.batches)

    def _report_refused(self, refused: Mapping[str, list[str]]) -> None:
        report_refusals(
            "accelerate's load_state", refused, strict=self.strict, warn=not self._warned
        )
        self._warned = True


def _epoch(dataloader: Any, steps: int) -> Iterator[Any]:
    """The batches of the epoch `steps` falls in, after `set_epoch` (a seedable sampler's order
    comes from its seed and the epoch, which `save_state` does not save for a map-style
    dataset: the loop counts epochs, as HF Trainer's does)."""
    dataloader.set_epoch(steps // len(dataloader))
    return iter(dataloader)


def _chained(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    """`first`, then `rest`: a generator, as the loader's own iterator is."""
    yield first
    yield from rest
