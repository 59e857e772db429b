"""`LightningSubject(..., native=True)`: the run is Lightning's own `Trainer.fit`, saved by
`Trainer.save_checkpoint` and resumed by `fit(ckpt_path=...)`, so a state only an attribute
keeps (no hook saves it) fails resume, and state the hooks keep resumes exactly, mid-epoch and
at an epoch's end. Runs where lightning is installed (make test installs it)."""

from __future__ import annotations

import pytest
import torch

L = pytest.importorskip("lightning.pytorch")

from pytest_ckpt.adapters.lightning import LightningSubject  # noqa: E402
from pytest_ckpt.checks.roundtrip import check_resume, check_roundtrip  # noqa: E402
from pytest_ckpt.errors import ResumeMismatch  # noqa: E402


class Curriculum(L.LightningModule):
    """The loss is weighted by how many samples the module has seen: a resume that forgets
    `samples_seen` differs from the first step on. The hooks save and restore it."""

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
        optimizer = torch.optim.AdamW(self.parameters(), lr=1e-2)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler}}  # per epoch

    def on_save_checkpoint(self, checkpoint) -> None:
        checkpoint["samples_seen"] = self.samples_seen

    def on_load_checkpoint(self, checkpoint) -> None:
        self.samples_seen = checkpoint["samples_seen"]


class ForgetsItsCurriculum(Curriculum):
    """The planted flaw: `samples_seen` lives only in the attribute."""

    def on_save_checkpoint(self, checkpoint) -> None:
        pass

    def on_load_checkpoint(self, checkpoint) -> None:
        pass


def batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def native(module: type, stage_steps: int) -> LightningSubject:
    return LightningSubject(
        module, make_batch=batch, stages={"TRAINING": stage_steps}, steps_per_epoch=3,
        native=True,
    )  # fmt: skip


@pytest.mark.parametrize("stage_steps", [4, 3], ids=["mid-epoch", "epoch-end"])
def test_native_mode_resumes_exactly_through_lightnings_own_fit(tmp_path, stage_steps) -> None:
    subject = native(Curriculum, stage_steps)
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    state = check_roundtrip(subject, system, tmp_path / "a.ckpt").state
    assert state["global_step"] == stage_steps and state["samples_seen"] == 8 * stage_steps
    loader_state = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert loader_state["position"] == (stage_steps - 1) % 3 + 1  # Lightning saved the data
    check_resume(subject, system, 2, tmp_path / "b.ckpt")


def test_native_mode_fails_a_state_only_an_attribute_keeps(tmp_path) -> None:
    subject = native(ForgetsItsCurriculum, 4)
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.raises(ResumeMismatch, match=r"steps\[0\]\['metrics'\]\['loss'\]"):
        check_resume(subject, system, 1, tmp_path / "b.ckpt")
