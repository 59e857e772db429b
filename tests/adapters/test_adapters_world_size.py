"""Every adapter runs under the world-size check: saved at 2 ranks, resumed at 1, exactly
(forked gloo ranks: ~4 s each). Each framework's case is skipped where it is not installed."""

from __future__ import annotations

import pytest
import torch

from pytest_ckpt.distributed.world_size import check_world_size_resume


def batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)


def lightning_subject():
    L = pytest.importorskip("lightning.pytorch")
    from pytest_ckpt.adapters.lightning import LightningSubject

    class Regressor(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            optimizer = torch.optim.AdamW(self.parameters(), lr=1e-2)
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
            return [optimizer], [{"scheduler": scheduler, "interval": "step"}]

    return LightningSubject(Regressor, make_batch=batch, stages={"WARMUP": 2})


def transformers_subject():
    transformers = pytest.importorskip("transformers")
    from pytest_ckpt.adapters.transformers import TransformersSubject

    def make_model():
        config = transformers.GPT2Config(
            n_layer=1, n_head=2, n_embd=8, vocab_size=32, n_positions=8
        )
        return transformers.GPT2LMHeadModel(config)

    def tokens(g: torch.Generator):
        ids = torch.randint(0, 32, (2, 8), generator=g)
        return {"input_ids": ids, "labels": ids}

    return TransformersSubject(make_model, make_batch=tokens, stages={"WARMUP": 2})


@pytest.mark.parametrize("make_subject", [lightning_subject, transformers_subject])
def test_each_adapter_saved_at_2_ranks_resumes_exactly_at_1(make_subject, tmp_path) -> None:
    subject = make_subject()
    result = check_world_size_resume(
        subject, stage="WARMUP", grid=(1, 1), save_world_size=2, load_world_size=1, steps=2,
        workdir=tmp_path, timeout=120,
    )  # fmt: skip
    assert [r["telemetry"][0]["step"] for r in result.continued[0]] == [3, 4]
