"""LightningSubject: a LightningModule through its own configure_optimizers and training_step.
Runs where lightning is installed (`pip install -c constraints.txt lightning`)."""

from __future__ import annotations

import pathlib

import pytest
import torch

L = pytest.importorskip("lightning.pytorch")

from pytest_ckpt.adapters.lightning import LightningSubject  # noqa: E402
from pytest_ckpt.checks.golden import load_fixture_dir  # noqa: E402
from pytest_ckpt.checks.roundtrip import check_resume, check_roundtrip  # noqa: E402
from pytest_ckpt.errors import CheckpointLoadError  # noqa: E402


class Regressor(L.LightningModule):
    def __init__(self, hidden: int = 8, lr: float = 1e-2, data_dir: object = "data") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.Linear(hidden, 1)
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_lightning_module_round_trips_and_resumes_exactly(tmp_path) -> None:
    subject = LightningSubject(Regressor, make_batch=batch, stages={"WARMUP": 1, "DECAY": 4})
    for stage in subject.stages():
        system = subject.build(grid=(1, 1), stage=stage, seed=0)
        state = check_roundtrip(subject, system, tmp_path / f"{stage}.pt").state
        assert state["hyper_parameters"] == {"hidden": 8, "lr": 1e-2, "data_dir": "data"}
        assert state["lr_schedulers"][0]["last_epoch"] == subject.stage_steps[stage]  # per step
        check_resume(subject, system, 2, tmp_path / f"{stage}-resume.pt")


def test_a_path_in_the_hyperparameters_is_what_weights_only_refuses(tmp_path) -> None:
    """PITFALLS: a Lightning .ckpt loads with weights_only=True until hparams hold a Path."""
    subject = LightningSubject(lambda: Regressor(data_dir=pathlib.Path("data")), make_batch=batch)
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.raises(CheckpointLoadError, match=r"root\['hyper_parameters'\]\['data_dir'\] is"):
        check_roundtrip(subject, system, tmp_path / "a.pt")


def test_a_trainer_written_ckpt_is_a_golden_the_backcompat_check_loads(tmp_path) -> None:
    data = torch.utils.data.TensorDataset(*batch(torch.Generator().manual_seed(0)))
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Regressor(), torch.utils.data.DataLoader(data, batch_size=4))
    trainer.save_checkpoint(tmp_path / "golden" / "epoch=0-step=2.ckpt")
    loaded = load_fixture_dir(tmp_path / "golden", pattern="*.ckpt")
    state = loaded["epoch=0-step=2.ckpt"]
    assert state["global_step"] == 2 and "net.1.running_mean" in state["state_dict"]
    rebuilt = Regressor(**state["hyper_parameters"])
    rebuilt.load_state_dict(state["state_dict"], strict=True)
