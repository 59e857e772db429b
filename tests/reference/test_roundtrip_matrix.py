"""The foundation's promise: at every reachable stage, on both hosts and several grids, the
reference model survives torch.save -> torch.load(weights_only=True) -> from_config + strict
load, with a bit-identical forward pass."""

from __future__ import annotations

import pytest
import torch

from pytest_ckpt.reference import SeedStage, build_at_stage
from pytest_ckpt.reference.fields import ensure_primitive
from tests.reference.conftest import forward

HOSTS = ["cnn", "transformer"]
GRIDS = ["1x1", "1x3", "2x2", "3x1"]


@pytest.mark.parametrize("stage", list(SeedStage), ids=lambda s: s.name)
@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("host", HOSTS)
def test_model_round_trips_bit_identically(host: str, grid: str, stage: SeedStage, roundtrip):
    model = build_at_stage(host, grid, stage)
    assert set(model.stages().values()) == {stage}
    before = forward(model)

    restored, path = roundtrip(model)

    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    assert torch.equal(forward(restored), before)
    assert restored.stages() == model.stages()
    assert restored.config() == model.config()
    original, reloaded = model.state_dict(), restored.state_dict()
    assert original.keys() == reloaded.keys()
    for key, value in original.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, reloaded[key]), key
        else:
            assert value == reloaded[key], key


@pytest.mark.parametrize("stage", list(SeedStage), ids=lambda s: s.name)
def test_config_and_extra_state_are_primitives_at_every_stage(stage: SeedStage) -> None:
    model = build_at_stage("cnn", "2x2", stage)
    ensure_primitive(model.config(), where="config")
    for key, value in model.state_dict().items():
        if key.endswith("_extra_state"):
            ensure_primitive(value, where=key)
        else:
            assert isinstance(value, torch.Tensor), key


def test_raw_checkpoint_loads_with_weights_only_and_no_allowlist(tmp_path) -> None:
    model = build_at_stage("transformer", "2x2", SeedStage.BLENDING)
    path = tmp_path / "ckpt.pt"
    torch.save(model.checkpoint(), path)
    with torch.serialization.safe_globals([]):
        loaded = torch.load(path, weights_only=True)
    assert loaded["config"]["host"]["kind"] == "transformer"
    extra = loaded["state_dict"]["seed_slots.r0c1._extra_state"]
    assert extra["seed_state"]["stage"] == "BLENDING"
    assert isinstance(extra["seed_state"]["stage_entered_at"], float)


def test_transformer_topology_is_restored_not_defaulted(roundtrip) -> None:
    # A Transformer-hosted slot once came back as a CNN slot: the topology was not saved.
    model = build_at_stage("transformer", "3x1", SeedStage.PROBATIONARY)
    restored, _ = roundtrip(model)
    assert type(restored.host).__name__ == "TransformerHost"
    assert restored.seed_slots["r2c0"].point.layout == "ntc"
    assert restored.seed_slots["r2c0"].state.blueprint == model.seed_slots["r2c0"].state.blueprint


def test_same_arguments_build_identical_models() -> None:
    a = build_at_stage("cnn", "1x3", SeedStage.BLENDING, seed=3)
    b = build_at_stage("cnn", "1x3", SeedStage.BLENDING, seed=3)
    c = build_at_stage("cnn", "1x3", SeedStage.BLENDING, seed=4)
    assert torch.equal(forward(a), forward(b))
    assert not torch.equal(forward(a), forward(c))


def test_building_a_model_leaves_the_callers_rng_alone() -> None:
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    build_at_stage("cnn", "1x1", SeedStage.TRAINING)
    assert torch.equal(torch.rand(3), expected)
