"""Native mode of `TransformersSubject` (`TransformersSubject(..., native=True)`): every run is
transformers' own `Trainer.train`, saved as the Trainer saves (`checkpoint-N/`) and resumed by
`train(resume_from_checkpoint=...)`, so what is proven is the user's real save and resume path.

A system is one finished `Trainer.train` on CPU (no reporting, no progress bar) with a fixed
`max_steps` (`total_steps`: the learning-rate schedule depends on it), stopped at step N by a
callback that sets `should_save` and `should_training_stop`, so the Trainer writes
`checkpoint-N/` itself. A step does not continue a finished `train` (a second call starts
over): it runs the whole train again one step further, from the seed for a continued system
and from the same checkpoint for a resumed one, so a resumed run is stopped exactly once.

The export is `checkpoint-N/` read through `framework_folders` (each file a compared value;
`rng_state.pth`, which holds numpy's RNG state, kept as bytes with its `weights_only` refusal
named), leaving out `training_args.bin`: a pickled `TrainingArguments` that resume never
loads (the user passes the arguments again; so does the harness). `rebuild` writes the folder
back and loads `model.safetensors` into a fresh model as the Trainer does (for the probe);
its steps resume from that folder with `resume_from_checkpoint`. The Trainer reloads the RNG
states only after it fetched the first batch, and it shuffles with a sampler seeded from
`TrainingArguments.seed`: a resumed run is given the same arguments, seed included, and a
model made from another seed (everything it learned must come from the folder).

Samples: the dataset's items go to the collator with their index, which a recording collator
takes off before the real one collates (`data_collator`, else `default_data_collator`), so
each step reports the indices it trained on (`StepResult.samples`). The items reach the
collator as the dataset gives them (the Trainer's removal of unused columns does not apply).
Costs one `Trainer.train` per step and per system.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pytest_ckpt.adapters.framework_folders import (
    FILES_KEY,
    REFUSED_KEY,
    read_folder,
    write_folder,
)
from pytest_ckpt.adapters.rngs import global_rng_state, restore_global_rng_state
from pytest_ckpt.errors import SubjectError
from pytest_ckpt.subject import StepResult

NATIVE_KEY = "pytest_ckpt_native"  # the harness's seed and step, beside the folder's files
RESUME_SEED_OFFSET = 1_000_003  # a resumed run's fresh model: everything from the folder
WEIGHTS_FILE = "model.safetensors"
NEVER_LOADED = ("training_args.bin",)  # the Trainer never reads it on resume
SET_BY_HARNESS = frozenset(
    {"output_dir", "max_steps", "seed", "save_strategy", "report_to", "logging_steps",
     "logging_strategy", "disable_tqdm", "resume_from_checkpoint"}
)  # fmt: skip


class IndexedDataset:
    """The user's map-style dataset, each item paired with its index."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        return int(index), self.dataset[index]


class RecordingCollator:
    """Records the indices of each batch it collates, then collates the items. Accelerate's
    loader reads one batch ahead, so the batches wait in a queue until a step takes them."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate
        self.batches: deque[list[int]] = deque()

    def __call__(self, features: list[tuple[int, Any]]) -> Any:
        self.batches.append([index for index, _ in features])
        return self.collate([item for _, item in features])


def trainer_arguments(subject: Any, *, output_dir: str, seed: int) -> dict[str, Any]:
    """The `TrainingArguments` of every run: the subject's own, and what the harness sets."""
    return {
        "per_device_train_batch_size": 4,
        "learning_rate": 5e-4,
        "weight_decay": 0.01,
        "warmup_steps": subject.warmup_steps,
        "dataloader_num_workers": 0,
        "use_cpu": True,
        **subject.training_args,
        "output_dir": output_dir,
        "max_steps": subject.total_steps,
        "seed": seed,
        "save_strategy": "no",  # the harness's callback decides when the Trainer saves
        "report_to": [],
        "logging_strategy": "steps",
        "logging_steps": 1,  # each step's loss and learning rate, from the Trainer's own log
        "disable_tqdm": True,
    }


def check_training_args(training_args: Mapping[str, Any]) -> None:
    """ValueError for an argument the harness sets itself."""
    taken = sorted(SET_BY_HARNESS & set(training_args))
    if taken:
        raise ValueError(
            f"training_args may not set {', '.join(taken)}: native mode sets them (max_steps is "
            "total_steps; the harness stops and saves each run itself)"
        )


def recorder_class(transformers: Any) -> type:
    """The callback that records each step and stops and saves at the run's last one: made
    once transformers is imported."""

    class StepRecorder(transformers.TrainerCallback):
        def __init__(self, stop_at: int, collator: RecordingCollator) -> None:
            self.stop_at = stop_at
            self.collator = collator
            self.records: list[dict[str, float]] = []
            self.samples: list[list[int]] = []

        def on_step_end(self, args, state, control, **kwargs):
            taken: list[int] = []
            for _ in range(args.gradient_accumulation_steps):
                if self.collator.batches:
                    taken += self.collator.batches.popleft()
            self.samples.append(taken)
            if state.global_step >= self.stop_at:
                control.should_save = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                record = {"loss": float(logs["loss"]), "lr": float(logs["learning_rate"])}
                if logs.get("grad_norm") is not None:
                    record["grad_norm"] = float(logs["grad_norm"])
                self.records.append(record)

    return StepRecorder


def native_train(
    subject: Any, *, seed: int, steps: int, resume: Mapping[str, Any] | None
) -> dict[str, Any]:
    """One `Trainer.train` to `steps` steps, from the seed or resumed from `resume` (an
    export, written back to a real `checkpoint-N/` folder); returns the system. The global
    RNGs are put back after it: the Trainer seeds them (`set_seed`) and restores them from
    `rng_state.pth` itself, so a run neither reads nor changes the harness's RNG history
    (and the resume diagnosis does not blame the global RNGs for what the folder holds)."""
    outside = global_rng_state()
    try:
        return _train(subject, seed=seed, steps=steps, resume=resume)
    finally:
        restore_global_rng_state(outside)


def _train(
    subject: Any, *, seed: int, steps: int, resume: Mapping[str, Any] | None
) -> dict[str, Any]:
    import torch

    transformers = subject.transformers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dataset = subject.make_dataset()  # the same data for every run, as a user reloads it
        torch.manual_seed(seed + (RESUME_SEED_OFFSET if resume is not None else 0))
        model = subject.make_model()
    collator = RecordingCollator(subject.data_collator or transformers.default_data_collator)
    recorder = recorder_class(transformers)(steps, collator)
    with tempfile.TemporaryDirectory() as out, _quiet(transformers):
        resume_dir = None
        if resume is not None:
            resume_dir = os.path.join(out, f"checkpoint-{int(resume[NATIVE_KEY]['steps'])}")
            write_folder(resume[FILES_KEY], resume_dir)
        run_dir = os.path.join(out, "run")
        args = transformers.TrainingArguments(
            **trainer_arguments(subject, output_dir=run_dir, seed=seed)
        )
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=IndexedDataset(dataset),
            data_collator=collator, callbacks=[recorder],
        )  # fmt: skip
        for printer in (transformers.PrinterCallback, transformers.ProgressCallback):
            trainer.remove_callback(printer)  # each log printed: not in a test's output
        trainer.train(resume_from_checkpoint=resume_dir)
        folder = os.path.join(run_dir, f"checkpoint-{steps}")
        if not os.path.isdir(folder):
            raise SubjectError(
                f"{subject.name}: the Trainer stopped at step {trainer.state.global_step}, "
                f"before step {steps}: give TransformersSubject a total_steps above the stages "
                f"plus the resume steps (it is max_steps, now {subject.total_steps})"
            )
        checkpoint = read_folder(folder, skip=NEVER_LOADED)
    return {
        "model": model,
        "checkpoint": checkpoint,
        "records": recorder.records,
        "samples": recorder.samples,
        "steps": steps,
        "seed": seed,
        # {} for a run from the seed: a dict on both sides for the roundtrip's structure check
        "resume": {} if resume is None else dict(resume),
    }


@contextlib.contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """The Trainer's info lines and the model writer's progress bar left out of reports."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def native_export(system: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **system["checkpoint"],
        NATIVE_KEY: {"seed": system["seed"], "steps": system["steps"]},
    }


def native_rebuild(subject: Any, state: Mapping[str, Any]) -> dict[str, Any]:
    """A run resumed from `state` that has not stepped yet: the folder as the Trainer will
    read it, and (for the probe) a fresh model from another seed with `model.safetensors`
    loaded as the Trainer's `_load_from_checkpoint` loads it (`load_state_dict(..., False)`:
    tied weights are not in the file; a weight dropped from it shows in the probe)."""
    import torch

    seed, steps = int(state[NATIVE_KEY]["seed"]), int(state[NATIVE_KEY]["steps"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + RESUME_SEED_OFFSET)
        model = subject.make_model()
    weights = state[FILES_KEY].get(WEIGHTS_FILE)
    if weights is None:
        raise SubjectError(f"{subject.name}: the checkpoint folder has no {WEIGHTS_FILE}")
    model.load_state_dict(weights, False)
    model.train()  # as the Trainer puts it before every step
    # `save_pretrained` stamps the saved model's own config with these two (the live model
    # was saved, this one not yet): taken from the folder's config.json, so that the
    # structure check compares the models and not the stamps
    saved_config = state[FILES_KEY].get("config.json", {})
    for stamp in ("dtype", "architectures"):
        if stamp in saved_config:
            setattr(model.config, stamp, saved_config[stamp])
    return {
        "model": model,
        "checkpoint": {FILES_KEY: state[FILES_KEY], REFUSED_KEY: state[REFUSED_KEY]},
        "records": [],
        "samples": [],
        "steps": steps,
        "seed": seed,
        "resume": dict(state),
    }


def native_step(subject: Any, system: dict[str, Any]) -> StepResult:
    """The same run one step further: from the seed, or from the same checkpoint."""
    resume = system["resume"] or None
    ran = native_train(subject, seed=system["seed"], steps=system["steps"] + 1, resume=resume)
    system.update(ran)
    metrics = system["records"][-1] if system["records"] else {}
    samples = system["samples"][-1] if system["samples"] else None
    return StepResult(
        metrics=metrics, telemetry=[{"event": "step", "step": system["steps"]}], samples=samples
    )
