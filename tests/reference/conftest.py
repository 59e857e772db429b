from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pytest_ckpt.reference import MorphogeneticModel, load_model, save_model
from pytest_ckpt.reference.tasks import sample_input


@pytest.fixture
def roundtrip(tmp_path: Path):
    """Save a model to a real file, reload it with weights_only=True, and return both outputs."""

    def run(model: MorphogeneticModel) -> tuple[MorphogeneticModel, Path]:
        path = tmp_path / "model.pt"
        save_model(model, path)
        return load_model(path), path

    return run


def forward(model: MorphogeneticModel) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(sample_input(model.host))
