"""A LightningModule and a dataset whose samples are told apart by their index, for the
Lightning data-order tests (importing this module imports lightning: importorskip first)."""

from __future__ import annotations

import lightning.pytorch as L
import torch
from torch.utils.data import Dataset


class Points(Dataset):
    """12 distinct samples; the loss depends on which ones a batch holds."""

    def __init__(self) -> None:
        self.x = torch.linspace(-1, 1, 36).reshape(12, 3)

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.x[index].sum(dim=0, keepdim=True)


class Regressor(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(3, 1)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
