"""Native mode of `LightningSubject` (`LightningSubject(..., native=True)`): every run goes
through Lightning's own `Trainer.fit`, `Trainer.save_checkpoint` and `fit(ckpt_path=...)`, so
what is proven is the user's real save and resume path, not the adapter's copy of it.

A system is one finished `Trainer.fit` on CPU (no logger, progress bar or checkpoint callback):
the run that never stopped, from the seed to `steps` steps; or a resumed run, `fit(ckpt_path=)`
from a checkpoint to `steps` steps. A step does not continue a live fit (a second `fit` on the
same Trainer calls `configure_optimizers` again, losing the optimizer's state): it runs the
whole fit again one step further, from the seed for a continued system and from the same
checkpoint for a resumed one, so a resumed run is stopped exactly once. The export is the dict
`Trainer.save_checkpoint` writes after the fit (captured by a `CheckpointIO` plugin as Lightning
hands it over), `loops` included; `rebuild` writes the loaded dict to a `.ckpt` file and resumes
from it with `max_steps` at its own step, which restores it and takes no step.

With `make_loader`, the user's DataLoader goes to `fit` as it is (`lightning_data` records the
indices its sampler draws; each step reports its batch's), so Lightning saves and restores its
position as it does for the user, or does not. Otherwise batches come from
`make_batch(generator)` through `NativeBatches`, a sized iterable with
`state_dict`/`load_state_dict`: Lightning saves it in `loops` and restores it on resume, as it
does a stateful DataLoader (a sized one is not prefetched, so its state is exact at any step).
What Lightning does not save (the global RNGs, a plain attribute) is lost on resume, as it is
for the user: native mode reports it. Costs one `Trainer.fit` per step and per system.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pytest_ckpt.adapters.rngs import seed_global_rngs
from pytest_ckpt.subject import StepResult

if TYPE_CHECKING:
    from pytest_ckpt.adapters.lightning_data import LightningLoader

NATIVE_KEY = "pytest_ckpt_native"  # the harness's seed, beside Lightning's own keys
RESUME_SEED_OFFSET = 1_000_003  # a resumed run's fresh module and data: everything from the file


class NativeBatches:
    """`steps_per_epoch` batches an epoch from `make_batch(generator)`, resumable: its state
    (the generator and the position in the epoch) is what Lightning saves in `loops`."""

    def __init__(self, make_batch: Callable[[Any], Any], seed: int, steps_per_epoch: int) -> None:
        import torch

        self.make_batch = make_batch
        self.generator = torch.Generator().manual_seed(seed)
        self.steps_per_epoch = steps_per_epoch
        self.position = 0

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[Any]:
        """The rest of the epoch: all of it after a finished one (Lightning, knowing the
        length, asks for no batch past the last, so `position` stays at the end until then)."""
        if self.position >= self.steps_per_epoch:
            self.position = 0
        while self.position < self.steps_per_epoch:
            self.position += 1
            yield self.make_batch(self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "position": self.position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.position = int(state["position"])


def native_classes(lightning: Any) -> tuple[type, type]:
    """The `CheckpointIO` that captures what `save_checkpoint` writes and the callback that
    records each step's loss and learning rate: made once lightning is imported."""

    class CapturingIO(lightning.plugins.TorchCheckpointIO):
        """Keeps the dict Lightning hands over to be written; reads files as Lightning does."""

        captured: dict[str, Any] | None = None

        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options=None):
            self.captured = checkpoint

    class StepRecorder(lightning.Callback):
        """Each step's loss and learning rate; at the last step, `trainer.save_checkpoint`
        where `ModelCheckpoint(every_n_train_steps=...)` saves (after every other callback's
        batch end: it is last in the list)."""

        def __init__(self, path: str, data: LightningLoader | None) -> None:
            self.records: list[dict[str, Any]] = []
            self.samples: list[list[Any] | None] = []
            self.path, self.data = path, data

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            self.records.append({"loss": float(loss.detach()), "lr": float(lr)})
            if self.data is not None:
                self.samples.append(self.data.taken_ids())
            if trainer.global_step >= trainer.max_steps:
                trainer.save_checkpoint(self.path)

    return CapturingIO, StepRecorder


def native_fit(
    subject: Any, *, seed: int, steps: int, resume: Mapping[str, Any] | None
) -> dict[str, Any]:
    """One `Trainer.fit` to `steps` steps, from the seed or resumed from `resume` (a checkpoint
    dict, written to a real `.ckpt` file for `ckpt_path`); returns the system."""
    import torch

    capturing_io, step_recorder = native_classes(subject.lightning)
    seed_global_rngs(seed)
    data: LightningLoader | None = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = subject.make_model()
        if subject.make_loader is not None:  # the user's loader, samples recorded
            data = subject._loader(seed)
    batches = data.loader if data is not None else _native_batches(subject, seed)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings(), _quiet():
        io = capturing_io()
        recorder = step_recorder(os.path.join(folder, "last.ckpt"), data)
        extra = list(subject.make_callbacks()) if subject.make_callbacks is not None else []
        trainer = subject.lightning.Trainer(
            max_steps=steps, max_epochs=-1, accelerator="cpu", devices=1, logger=False,
            enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
            num_sanity_val_steps=0, plugins=[io], callbacks=[*extra, recorder],
        )  # fmt: skip
        warnings.filterwarnings("ignore", module="lightning")
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers).*")
        ckpt_path = None
        if resume is not None:
            ckpt_path = os.path.join(folder, "resume.ckpt")
            torch.save(dict(resume), ckpt_path)
        # weights_only=True: Lightning's own loader, under the rule the harness proves
        trainer.fit(module, train_dataloaders=batches, ckpt_path=ckpt_path, weights_only=True)
        if io.captured is None:  # a resume at its own step: no batch ran
            trainer.save_checkpoint(os.path.join(folder, "last.ckpt"))
            _keep_restored_position(io.captured, data)
        elif resume is not None:
            _count_restarted_epoch(io.captured, resume, subject.steps_per_epoch)
    return {
        "model": module,
        "checkpoint": io.captured,
        "records": recorder.records,
        "samples": recorder.samples,
        "steps": trainer.global_step,
        "seed": seed,
        # {} for a run from the seed: a dict on both sides, so the roundtrip's structure
        # comparison sees one kind of value, not None against the loaded checkpoint
        "resume": {} if resume is None else resume,
    }


def _native_batches(subject: Any, seed: int) -> NativeBatches:
    assert subject.make_batch is not None  # LightningSubject: make_batch when no make_loader
    return NativeBatches(subject.make_batch, seed, subject.steps_per_epoch)


def _keep_restored_position(checkpoint: Any, data: LightningLoader | None) -> None:
    """Lightning 2.6 loads a stateful loader's saved position into it, but a fit that ends
    before asking it for a batch resets it, and a save after that writes a fresh position. The
    position Lightning loaded into the loader is what such a re-save shows here."""
    if data is None or not data.loaded:
        return
    checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] = [data.loaded[-1]]


def _count_restarted_epoch(
    checkpoint: dict[str, Any], resume: Mapping[str, Any], steps_per_epoch: int
) -> None:
    """Lightning 2.6, resuming from a checkpoint saved at an epoch's last batch, starts the
    next epoch without counting it `ready` and `started` (`FitLoop.on_advance_start` skips both
    when `restarted_on_epoch_end`), and stays one behind from then on; nothing reads those two
    counters (`current_epoch` is the `completed` one). They are counted here as the run that
    never stopped counts them, so this bookkeeping is not reported as a lost state; every other
    value is compared as Lightning saved it."""
    if int(resume["global_step"]) % steps_per_epoch:
        return  # resumed mid-epoch: counted as saved
    progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]
    for part in ("total", "current"):
        for counter in ("ready", "started"):
            progress[part][counter] += 1


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Lightning's info lines (GPU available, tips, restoring states) left out of reports."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def native_export(system: Mapping[str, Any]) -> dict[str, Any]:
    return {**system["checkpoint"], NATIVE_KEY: {"seed": system["seed"]}}


def native_rebuild(subject: Any, state: Mapping[str, Any]) -> dict[str, Any]:
    """Lightning's own restore of `state` (a fit that resumes at the checkpoint's step);
    the harness's seed, not Lightning's, goes on with it."""
    seed = int(state[NATIVE_KEY]["seed"])
    resume = {k: v for k, v in state.items() if k != NATIVE_KEY}
    system = native_fit(
        subject, seed=seed + RESUME_SEED_OFFSET, steps=int(state["global_step"]), resume=resume
    )
    system["seed"] = seed
    return system


def native_step(subject: Any, system: dict[str, Any]) -> StepResult:
    """The same run one step further: from the seed, or from the same checkpoint."""
    resume, seed = system["resume"] or None, system["seed"]
    offset = 0 if resume is None else RESUME_SEED_OFFSET
    ran = native_fit(subject, seed=seed + offset, steps=system["steps"] + 1, resume=resume)
    system.update(ran, seed=seed)
    metrics = system["records"][-1] if system["records"] else {}
    samples = system["samples"][-1] if system["samples"] else None
    telemetry = [{"event": "step", "step": system["steps"]}]
    return StepResult(metrics=metrics, telemetry=telemetry, samples=samples)
