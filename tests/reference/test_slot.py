from __future__ import annotations

import copy

import pytest

from pytest_ckpt.reference import BlendConfig, MorphogeneticModel, SeedStage, build_at_stage
from pytest_ckpt.reference.scenarios import build_reference_model
from tests.reference.conftest import forward


def _extra(model: MorphogeneticModel, slot_id: str = "r0c0") -> dict:
    return copy.deepcopy(model.seed_slots[slot_id].get_extra_state())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.update(schema_version=7), "slot r0c0 extra_state: schema_version 7"),
        (lambda e: e.pop("blend"), r"slot r0c0 extra_state: missing required field\(s\) 'blend'"),
        (lambda e: e.update(seed_state="BLENDING"), "'seed_state' must be Mapping or None"),
        (lambda e: e.update(slot_id="r9c9"), "belongs to slot 'r9c9'"),
        (lambda e: e.update(blend=None), "must both be present or both None"),
        (lambda e: e["seed_state"].update(stage=3), "SeedState: field 'stage' must be str"),
        (lambda e: e["blend"].update(algorithm="cosine"), "unknown blend algorithm 'cosine'"),
        (lambda e: e.update(seeds_started=0), "seeds_started 0 is too small"),
        (lambda e: e["seed_state"].update(slot_id="r0c1"), "seed_state names slot 'r0c1'"),
    ],
)
def test_set_extra_state_rejects_bad_input_with_one_value_error(mutate, message: str) -> None:
    model = build_at_stage("cnn", "1x1", SeedStage.BLENDING)
    extra = _extra(model)
    mutate(extra)
    with pytest.raises(ValueError, match=message):
        model.seed_slots["r0c0"].set_extra_state(extra)


def test_set_extra_state_refuses_a_stage_whose_modules_the_slot_lacks() -> None:
    probation = build_at_stage("cnn", "1x1", SeedStage.PROBATIONARY)
    dormant = build_reference_model("cnn", "1x1")
    with pytest.raises(ValueError, match="holds a conv3x3 seed at PROBATIONARY.*slot has no seed"):
        dormant.seed_slots["r0c0"].set_extra_state(_extra(probation))


def test_a_failed_set_extra_state_leaves_the_slot_unchanged() -> None:
    model = build_at_stage("cnn", "1x1", SeedStage.BLENDING)
    before = _extra(model)
    broken = _extra(model)
    broken["seed_state"]["stage"] = "NOPE"
    with pytest.raises(ValueError):
        model.seed_slots["r0c0"].set_extra_state(broken)
    assert _extra(model) == before


def test_step_epoch_and_advance_stage_enter_a_stage_the_same_way() -> None:
    # Two code paths into a stage once drifted apart. Finish one blend by epochs and advance
    # the other by hand: apart from timestamps and epoch counters, the seeds must agree.
    model = build_at_stage("cnn", "1x3", SeedStage.BLENDING)
    by_epoch, by_hand = model.seed_slots["r0c1"], model.seed_slots["r0c2"]
    by_hand.advance_stage()
    by_epoch.step_epoch()
    for slot in (by_epoch, by_hand):
        assert slot.stage is SeedStage.PROBATIONARY
        assert slot.blend_gate is None
    a, b = by_epoch.state.to_dict(), by_hand.state.to_dict()
    for key in ("seed_id", "slot_id", "blueprint", "stage_entered_at", "stage_history"):
        a.pop(key), b.pop(key)
    for key in ("epochs_total", "metrics", "epochs_in_stage"):
        a.pop(key), b.pop(key)
    assert a == b


def test_a_pruned_slot_can_host_a_new_seed_and_still_round_trips(roundtrip) -> None:
    model = build_at_stage("cnn", "1x1", SeedStage.PRUNED)
    slot = model.seed_slots["r0c0"]
    assert slot.seed is None and slot.state.stage is SeedStage.PRUNED
    model.germinate("r0c0", "bottleneck", BlendConfig("linear", 2))
    model.advance_stage("r0c0")
    assert slot.state.seed_id == "r0c0/seed2"
    restored, _ = roundtrip(model)
    assert restored.seed_slots["r0c0"].state.seed_id == "r0c0/seed2"
    assert restored.seed_slots["r0c0"].seeds_started == 2


def test_germinating_an_occupied_slot_or_acting_on_an_empty_one_is_refused() -> None:
    model = build_at_stage("cnn", "1x1", SeedStage.TRAINING)
    with pytest.raises(ValueError, match="already hosts seed r0c0/seed1 at TRAINING"):
        model.germinate("r0c0", "conv3x3", BlendConfig("linear", 2))
    empty = build_reference_model("cnn", "1x1")
    with pytest.raises(ValueError, match="slot r0c0 is DORMANT"):
        empty.advance_stage("r0c0")
    with pytest.raises(ValueError, match="'mid' is no longer accepted.*'r0c1'"):
        empty.germinate("mid", "conv3x3", BlendConfig("linear", 2))
    with pytest.raises(ValueError, match="unknown blueprint 'mlp' for nchw slots"):
        empty.germinate("r0c0", "mlp", BlendConfig("linear", 2))


def test_fossilized_seeds_cannot_move_again() -> None:
    model = build_at_stage("cnn", "1x1", SeedStage.FOSSILIZED)
    with pytest.raises(ValueError, match="FOSSILIZED -> PRUNED"):
        model.prune("r0c0")
    with pytest.raises(ValueError, match="no next stage"):
        model.advance_stage("r0c0")


def test_training_seed_leaves_the_host_output_untouched() -> None:
    germinated = build_at_stage("cnn", "2x2", SeedStage.GERMINATED)
    training = MorphogeneticModel.from_checkpoint(germinated.checkpoint())
    for slot_id in training.seed_slots:
        training.advance_stage(slot_id)
    assert (forward(training) == forward(germinated)).all()
