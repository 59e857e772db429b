"""Small synthetic tasks the reference model trains on: seeded, CPU, milliseconds per batch.

Every batch is drawn from a caller-owned `torch.Generator`, so the data stream is part of the
state a checkpoint can capture (`Generator.get_state()`), unlike the global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pytest_ckpt.reference.hosts import CNNHost, SegmentedHost, TransformerHost


@dataclass(slots=True, frozen=True)
class Batch:
    inputs: torch.Tensor
    targets: torch.Tensor


class SyntheticTask:
    """Images whose label is a function of their pixels (CNN), or arithmetic token
    sequences to continue (Transformer). Both are learnable, so losses move."""

    def __init__(self, host: SegmentedHost, *, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.host = host
        self.batch_size = batch_size

    def batch(self, generator: torch.Generator) -> Batch:
        if isinstance(self.host, CNNHost):
            return self._image_batch(self.host, generator)
        if isinstance(self.host, TransformerHost):
            return self._token_batch(self.host, generator)
        raise ValueError(f"no synthetic task for host kind {self.host.kind!r}")

    def _image_batch(self, host: CNNHost, generator: torch.Generator) -> Batch:
        x = torch.randn(self.batch_size, 3, 32, 32, generator=generator)
        brightness = x[:, 0, :16, :16].mean(dim=(1, 2))  # ~N(0, 1/256)
        classes = host.num_classes
        y = ((brightness * 16 + 0.5) * classes).floor().clamp(0, classes - 1).long()
        return Batch(x, y)

    def _token_batch(self, host: TransformerHost, generator: torch.Generator) -> Batch:
        length = host.max_seq_len + 1
        start = torch.randint(0, host.vocab_size, (self.batch_size, 1), generator=generator)
        step = torch.randint(1, 4, (self.batch_size, 1), generator=generator)
        seq = (start + step * torch.arange(length)) % host.vocab_size
        return Batch(seq[:, :-1], seq[:, 1:])

    @staticmethod
    def loss_and_accuracy(
        logits: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        flat_logits = logits.reshape(-1, logits.shape[-1])
        flat_targets = targets.reshape(-1)
        loss = F.cross_entropy(flat_logits, flat_targets)
        accuracy = float((flat_logits.argmax(-1) == flat_targets).float().mean()) * 100.0
        return loss, accuracy


def sample_input(host: SegmentedHost, *, seed: int = 1234, batch_size: int = 4) -> torch.Tensor:
    """A fixed input for comparing forward outputs before and after a round trip."""
    generator = torch.Generator().manual_seed(seed)
    return SyntheticTask(host, batch_size=batch_size).batch(generator).inputs
