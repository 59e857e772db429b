from __future__ import annotations

import pytest
import torch

from pytest_ckpt.reference import BlendConfig, MorphogeneticModel, SeedStage, build_at_stage
from pytest_ckpt.reference.blending import gated_alpha
from tests.reference.conftest import forward


@pytest.mark.parametrize("algorithm", ["linear", "sigmoid", "gated"])
def test_schedules_start_at_zero_end_at_one_and_never_decrease(algorithm: str) -> None:
    blend = BlendConfig(algorithm, 5)
    alphas = [blend.alpha_at(e) for e in range(7)]
    assert alphas[0] == 0.0
    assert alphas[5] == alphas[6] == 1.0
    assert alphas == sorted(alphas)


def test_gated_alpha_stays_in_bounds_and_keeps_the_end_points() -> None:
    gate = torch.tensor([0.0, 0.3, 1.0])
    assert torch.equal(gated_alpha(0.0, gate), torch.zeros(3))
    assert torch.equal(gated_alpha(1.0, gate), torch.ones(3))
    mid = gated_alpha(0.5, gate)
    assert bool(((mid >= 0.25) & (mid <= 0.75)).all())


def test_blend_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown blend algorithm 'cosine'"):
        BlendConfig("cosine", 3)
    with pytest.raises(ValueError, match="total_epochs must be >= 1"):
        BlendConfig("linear", 0)
    with pytest.raises(ValueError, match="schema_version 0 is not supported"):
        BlendConfig.from_dict({"schema_version": 0, "algorithm": "linear", "total_epochs": 2})


def _gate_keys(model: MorphogeneticModel) -> list[str]:
    return [key for key in model.state_dict() if ".blend_gate." in key]


def test_gate_weights_are_in_the_state_dict_only_while_blending() -> None:
    blending = build_at_stage("cnn", "1x1", SeedStage.BLENDING)
    slot = blending.seed_slots["r0c0"]
    assert slot.blend.algorithm == "gated"
    assert _gate_keys(blending) == [
        "seed_slots.r0c0.blend_gate.proj.weight",
        "seed_slots.r0c0.blend_gate.proj.bias",
    ]
    assert 0.0 < slot.state.alpha < 1.0

    probation = build_at_stage("cnn", "1x1", SeedStage.PROBATIONARY)
    slot = probation.seed_slots["r0c0"]
    assert _gate_keys(probation) == []
    assert slot.blend_gate is None
    assert slot.state.alpha == 1.0
    assert slot.state.isolate_gradients is False


def test_a_gated_blend_comes_back_gated(roundtrip) -> None:
    model = build_at_stage("transformer", "1x3", SeedStage.BLENDING)
    algorithms = [slot.blend.algorithm for slot in model.seed_slots.values()]
    assert sorted(algorithms) == ["gated", "linear", "sigmoid"]
    restored, _ = roundtrip(model)
    assert [s.blend.algorithm for s in restored.seed_slots.values()] == algorithms
    assert _gate_keys(restored) == _gate_keys(model)
    assert torch.equal(forward(restored), forward(model))


def test_loading_a_gated_blend_into_a_slot_without_a_gate_fails_loudly() -> None:
    # The old bug: the loader built the default blend, the gate weights became unexpected keys
    # and strict=False dropped them. Here the structure mismatch is an error, whatever `strict`.
    gated = build_at_stage("cnn", "1x1", SeedStage.BLENDING)
    state = gated.state_dict()
    linear_config = gated.config()
    linear_config["seed_slots"]["r0c0"]["blend"]["algorithm"] = "linear"
    wrong = MorphogeneticModel.from_config(linear_config)
    with pytest.raises(
        ValueError, match=r"gated blend.*rebuild with MorphogeneticModel.from_config"
    ):
        wrong.load_state_dict(state, strict=False)


def test_blending_moves_alpha_each_epoch_and_finishes_into_probation() -> None:
    model = build_at_stage("cnn", "1x1", SeedStage.TRAINING)
    slot = model.seed_slots["r0c0"]
    model.advance_stage("r0c0")
    assert slot.stage is SeedStage.BLENDING and slot.state.alpha == 0.0
    model.step_epoch()
    assert slot.stage is SeedStage.BLENDING and slot.state.alpha == 0.5
    model.step_epoch()
    assert slot.stage is SeedStage.PROBATIONARY and slot.state.alpha == 1.0
    assert slot.blend_gate is None
