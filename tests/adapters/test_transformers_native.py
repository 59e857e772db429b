"""`TransformersSubject(..., native=True)`: every run is transformers' own `Trainer.train`,
saved as `checkpoint-N/` and resumed with `resume_from_checkpoint`, so state the Trainer does
not save fails resume, a resume that skips no data is named by its samples, and correct code
resumes exactly mid-epoch and at an epoch's end. Runs where transformers and accelerate are
installed (`pip install -c constraints.txt transformers accelerate`)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from pytest_ckpt.adapters.framework_folders import (  # noqa: E402
    FILES_KEY,
    REFUSED_KEY,
    FrameworkFileWarning,
)
from pytest_ckpt.adapters.transformers import TransformersSubject  # noqa: E402
from pytest_ckpt.checks.roundtrip import check_resume, check_roundtrip  # noqa: E402
from pytest_ckpt.errors import CheckpointLoadError, ResumeMismatch, SubjectError  # noqa: E402

VOCAB = 64
ITEMS, BATCH = 32, 4  # 8 steps an epoch


def config() -> transformers.GPT2Config:
    return transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=16, vocab_size=VOCAB, n_positions=16, use_cache=False,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip


def tiny_gpt2() -> torch.nn.Module:
    return transformers.GPT2LMHeadModel(config())


class Curriculum(transformers.GPT2LMHeadModel):
    """The loss is weighted by the steps the model has trained: kept in a buffer, so in the
    state_dict and in the Trainer's `model.safetensors`."""

    persistent = True

    def __init__(self, config) -> None:
        super().__init__(config)
        self.register_buffer("trained", torch.zeros(()), persistent=self.persistent)

    def forward(self, **batch):
        output = super().forward(**batch)
        if self.training:
            self.trained += 1
            output.loss = output.loss * (1 + self.trained / 10)
        return output


class ForgetsItsCurriculum(Curriculum):
    """The planted flaw: a non-persistent buffer, which no Trainer file holds."""

    persistent = False


class TokenData(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.ids = torch.randint(0, VOCAB, (ITEMS, 8), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


@pytest.fixture(autouse=True)
def _quiet_and_one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrameworkFileWarning)
        yield
    torch.set_num_threads(before)


def native(make_model=tiny_gpt2, stage_steps: int = 3, **kwargs) -> TransformersSubject:
    args = {"learning_rate": 1e-3, "per_device_train_batch_size": BATCH}
    kwargs.setdefault("training_args", args)
    return TransformersSubject(
        make_model, native=True, make_dataset=TokenData, warmup_steps=2, total_steps=16,
        stages={"TRAINING": stage_steps}, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("stage_steps", [3, 8], ids=["mid-epoch", "epoch-end"])
def test_native_mode_resumes_exactly_through_the_trainers_own_checkpoint(
    tmp_path, stage_steps
) -> None:
    """GPT-2's dropout is on: the Trainer's rng_state.pth matters; the samples of each step
    come from the Trainer's own shuffled loader."""
    subject = native(stage_steps=stage_steps)
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    state = check_roundtrip(subject, system, tmp_path / "a.pt").state
    assert sorted(state[FILES_KEY]) == [
        "config.json", "generation_config.json", "model.safetensors", "optimizer.pt",
        "rng_state.pth", "scheduler.pt", "trainer_state.json",
    ]  # fmt: skip
    assert state[FILES_KEY]["trainer_state.json"]["global_step"] == stage_steps
    records = check_resume(subject, system, 2, tmp_path / "b.pt")
    assert [len(r["samples"]) for r in records] == [BATCH, BATCH]
    first_epoch = [i for samples in system["samples"][:8] for i in samples]
    assert sorted(first_epoch[: ITEMS if stage_steps == 8 else None]) == sorted(set(first_epoch))


def test_a_buffer_the_trainer_does_not_save_fails_resume_and_a_saved_one_passes(tmp_path) -> None:
    """Adapter mode passes both (its export is the live state_dict plus the model's own
    walk); native mode proves what the Trainer writes: a non-persistent buffer is lost."""
    check_resume(*_built(native(lambda: Curriculum(config()))), 1, tmp_path / "ok.pt")
    forgets = native(lambda: ForgetsItsCurriculum(config()))
    with pytest.raises(ResumeMismatch) as failed:
        check_resume(*_built(forgets), 1, tmp_path / "lost.pt")
    cause, *effects = str(failed.value).splitlines()
    assert cause.startswith("system['model'].trained (a buffer of ForgetsItsCurriculum, pers")
    assert "  steps[0]['metrics']['loss']" in effects[1]


def test_a_resume_that_skips_no_data_is_named_by_the_samples_read_twice(tmp_path) -> None:
    """`ignore_data_skip=True`: the resumed Trainer starts its epoch from the first batch."""
    args = {"per_device_train_batch_size": BATCH, "ignore_data_skip": True}
    with pytest.raises(ResumeMismatch, match=r"^data order: 4 samples read twice, 4 never"):
        check_resume(*_built(native(training_args=args)), 1, tmp_path / "c.pt")


ORACLE = """
import sys, numpy, torch
path = sys.argv[1]
try:
    torch.load(path, weights_only=True)
    print("plain: refused nothing")
except Exception as err:
    print("plain: refused", type(err).__name__)
from transformers.trainer_pt_utils import safe_globals
with safe_globals():
    print("trainer:", sorted(torch.load(path, weights_only=True)))
"""


def test_rng_state_pth_is_named_as_refused_and_the_trainers_allowlist_loads_it(tmp_path) -> None:
    """strict=True fails on the plain verdict; by default the file is kept as bytes, warned
    once. torch agrees in a subprocess, and the Trainer's own allowlist loads the file."""
    subject, system = _built(native(strict=True))
    with pytest.raises(CheckpointLoadError, match=r"^rng_state\.pth: refused .*Trainer") as err:
        subject.export_state(system)
    assert "root['numpy']" in str(err.value)
    lenient = native()
    with pytest.warns(FrameworkFileWarning) as caught:
        state, again = lenient.export_state(system), lenient.export_state(system)
    assert len(caught) == 1 and list(state[REFUSED_KEY]) == list(again[REFUSED_KEY])
    path = tmp_path / "rng_state.pth"
    path.write_bytes(state[FILES_KEY]["rng_state.pth"])
    oracle = subprocess.run(
        [sys.executable, "-c", ORACLE, str(path)], capture_output=True, text=True, timeout=120
    )
    assert oracle.stdout.splitlines() == [
        "plain: refused UnpicklingError",
        "trainer: ['cpu', 'numpy', 'python']",
    ], oracle.stderr


def test_native_mode_refuses_what_the_trainer_makes_itself_and_a_short_max_steps() -> None:
    with pytest.raises(ValueError, match="needs make_dataset"):
        TransformersSubject(tiny_gpt2, native=True)
    with pytest.raises(ValueError, match="takes no make_batch, make_optimizer"):
        TransformersSubject(
            tiny_gpt2, native=True, make_dataset=TokenData, make_optimizer=lambda m: None
        )
    with pytest.raises(ValueError, match="may not set max_steps, seed: native mode sets"):
        native(training_args={"seed": 1, "max_steps": 3})
    subject = native(stage_steps=3)
    subject.total_steps = 2
    with pytest.raises(SubjectError, match="stopped at step 2, before step 3: .*total_steps"):
        subject.build(grid=(1, 1), stage="TRAINING", seed=0)


def _built(subject: TransformersSubject) -> tuple[TransformersSubject, dict]:
    return subject, subject.build(grid=(1, 1), stage="TRAINING", seed=0)
