"""LightningSubject writes and restores the checkpoint dict as `Trainer.save_checkpoint` and a
`ckpt_path` resume do: `state_dict`, `optimizer_states`, `lr_schedulers`, `callbacks`,
`hyper_parameters`, and what the module's and the callbacks' `on_save_checkpoint` add. State
kept through the hooks resumes; a dataclass added there fails as Lightning's own loader fails.
Runs where lightning is installed."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

L = pytest.importorskip("lightning.pytorch")

from pytest_ckpt.adapters.lightning import LightningSubject  # noqa: E402
from pytest_ckpt.checks.roundtrip import check_resume, check_roundtrip  # noqa: E402
from pytest_ckpt.errors import CheckpointLoadError  # noqa: E402


class BatchCounter(L.Callback):
    """A stateful callback, as Lightning's own `ModelCheckpoint` is one."""

    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1

    def state_dict(self) -> dict:
        return {"batches": self.batches}

    def load_state_dict(self, state_dict: dict) -> None:
        self.batches = state_dict["batches"]

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint["counter_seen_save"] = True


class Curriculum(L.LightningModule):
    """Keeps a curriculum counter in a plain attribute, saved and restored through the
    checkpoint hooks; the loss depends on it, so a resume that forgets it differs."""

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.Linear(hidden, 1))
        self.samples_seen = 0

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.samples_seen += len(x)
        weight = 1.0 + self.samples_seen / 100
        return weight * torch.nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def configure_callbacks(self):
        return [BatchCounter()]

    def on_save_checkpoint(self, checkpoint) -> None:
        checkpoint["samples_seen"] = self.samples_seen

    def on_load_checkpoint(self, checkpoint) -> None:
        self.samples_seen = checkpoint["samples_seen"]


@dataclasses.dataclass
class RunConfig:
    name: str = "run"


class SavesADataclass(Curriculum):
    def on_save_checkpoint(self, checkpoint) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["run_config"] = RunConfig()


def batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_state_kept_through_the_checkpoint_hooks_resumes_exactly(tmp_path) -> None:
    subject = LightningSubject(Curriculum, make_batch=batch, stages={"WARMUP": 3})
    system = subject.build(grid=(1, 1), stage="WARMUP", seed=0)
    state = check_roundtrip(subject, system, tmp_path / "a.ckpt").state
    assert state["samples_seen"] == 24 and state["counter_seen_save"] is True
    assert state["callbacks"] == {"BatchCounter": {"batches": 3}}
    assert (state["global_step"], state["epoch"], state["hyper_parameters"]) == (
        3,
        3,
        {"hidden": 8},
    )
    assert set(state) >= {"state_dict", "optimizer_states", "lr_schedulers", "pytest_ckpt"}
    check_resume(subject, system, 2, tmp_path / "b.ckpt")


def _trainer_ckpt(module: L.LightningModule, path) -> None:
    data = torch.utils.data.TensorDataset(*batch(torch.Generator().manual_seed(0)))
    trainer = L.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=path.parent,
    )  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    trainer.save_checkpoint(path)


def test_a_dataclass_added_by_on_save_checkpoint_fails_as_lightnings_loader_does(tmp_path) -> None:
    subject = LightningSubject(SavesADataclass, make_batch=batch)
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.raises(CheckpointLoadError, match=r"root\['run_config'\] is"):
        check_roundtrip(subject, system, tmp_path / "a.ckpt")
    real = tmp_path / "trainer.ckpt"
    _trainer_ckpt(SavesADataclass(), real)
    with pytest.raises(Exception, match="Weights only load failed"):
        SavesADataclass.load_from_checkpoint(real)
    torch_load = "import sys, torch; torch.load(sys.argv[1], weights_only=True)"
    verdict = subprocess.run(
        [sys.executable, "-c", torch_load, str(real)], capture_output=True, text=True, timeout=120
    )
    assert verdict.returncode != 0 and "RunConfig" in verdict.stderr
