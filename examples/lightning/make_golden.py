"""Writes golden/epoch=0-step=2.ckpt with a real Lightning Trainer (run once by hand; the file
is committed and tests/test_goldens.py checks it still loads with weights_only=True)."""

import pathlib

import lightning.pytorch as L
import torch
from lit_subject import Regressor, make_batch

if __name__ == "__main__":
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(*make_batch(torch.Generator().manual_seed(0)))
    trainer = L.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(Regressor(), torch.utils.data.DataLoader(data, batch_size=8))
    trainer.save_checkpoint(pathlib.Path(__file__).parent / "golden" / "epoch=0-step=2.ckpt")
