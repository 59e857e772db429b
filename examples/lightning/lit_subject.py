"""A LightningModule as a pytest-ckpt subject: one line around the project's own module."""

from __future__ import annotations

import lightning.pytorch as L
import torch

from pytest_ckpt.adapters.lightning import LightningSubject


class Regressor(L.LightningModule):
    """A small regressor with BatchNorm (its running statistics are state too), AdamW and a
    learning rate halved every 2 optimizer steps."""

    def __init__(self, hidden: int = 16, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()  # saved in every .ckpt: keep them primitives
        self.net = torch.nn.Sequential(
            # no bias before BatchNorm: it would only learn from gradient noise (and differ
            # from one CPU to another in the snapshots)
            torch.nn.Linear(4, hidden, bias=False), torch.nn.BatchNorm1d(hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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


def make_batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(16, 4, generator=g)
    return x, x.sum(dim=1, keepdim=True).sin()


def make_subject() -> LightningSubject:
    return LightningSubject(Regressor, make_batch=make_batch, stages={"WARMUP": 1, "DECAY": 5})
