from __future__ import annotations

import copy
import itertools

import pytest

from pytest_ckpt.reference.lifecycle import (
    LIVE_STAGES,
    TRANSITIONS,
    SeedMetrics,
    SeedStage,
    SeedState,
    check_transition,
)

LEGAL = {
    (SeedStage.DORMANT, SeedStage.GERMINATED),
    (SeedStage.GERMINATED, SeedStage.TRAINING),
    (SeedStage.TRAINING, SeedStage.BLENDING),
    (SeedStage.BLENDING, SeedStage.PROBATIONARY),
    (SeedStage.PROBATIONARY, SeedStage.FOSSILIZED),
} | {(stage, SeedStage.PRUNED) for stage in LIVE_STAGES}


@pytest.mark.parametrize(
    ("current", "target"),
    list(itertools.product(SeedStage, SeedStage)),
    ids=lambda s: s.name,
)
def test_transition_table_allows_exactly_the_lifecycle(
    current: SeedStage, target: SeedStage
) -> None:
    if (current, target) in LEGAL:
        check_transition(current, target)
        assert target in TRANSITIONS[current]
    else:
        with pytest.raises(ValueError, match=rf"{current.name} -> {target.name}; allowed from"):
            check_transition(current, target)


def test_illegal_transition_error_lists_the_allowed_next_stages() -> None:
    with pytest.raises(ValueError, match="allowed from TRAINING: BLENDING, PRUNED"):
        check_transition(SeedStage.TRAINING, SeedStage.FOSSILIZED)
    with pytest.raises(ValueError, match=r"allowed from FOSSILIZED: none \(terminal\)"):
        check_transition(SeedStage.FOSSILIZED, SeedStage.PRUNED)


def _walked_state() -> SeedState:
    state = SeedState.new(seed_id="r0c1/seed1", slot_id="r0c1", blueprint="conv3x3", now=10.0)
    for i, stage in enumerate((SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING)):
        state.enter(stage, now=11.0 + i)
    state.metrics.record_step(0.5, 60.0, 1.25)
    state.alpha = 0.5
    return state


def test_seed_state_to_dict_is_primitives_and_round_trips() -> None:
    state = _walked_state()
    data = state.to_dict()
    assert data["stage"] == "BLENDING"
    assert data["previous_stage"] == "TRAINING"
    assert data["stage_history"] == [
        ["DORMANT", 10.0],
        ["GERMINATED", 11.0],
        ["TRAINING", 12.0],
        ["BLENDING", 13.0],
    ]
    assert SeedState.from_dict(data) == state
    assert SeedState.from_dict(data).to_dict() == data


def test_stage_value_zero_is_kept_as_a_real_previous_stage() -> None:
    # DORMANT has value 0; an `if value:` check once turned it into "no previous stage".
    state = SeedState.new(seed_id="s", slot_id="r0c0", blueprint="mlp", now=0.0)
    state.enter(SeedStage.GERMINATED, now=1.0)
    assert state.previous_stage is SeedStage.DORMANT
    assert SeedState.from_dict(state.to_dict()).previous_stage is SeedStage.DORMANT


def _broken(mutate) -> dict:
    data = _walked_state().to_dict()
    mutate(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema_version=2), "schema_version 2 is not supported"),
        (lambda d: d.pop("schema_version"), "missing required field 'schema_version'"),
        (lambda d: d.pop("isolate_gradients"), "missing required field.*'isolate_gradients'"),
        (lambda d: d.update(alpha="0.5"), "field 'alpha' must be float"),
        (lambda d: d.update(epochs_in_stage=True), "field 'epochs_in_stage' must be int"),
        (lambda d: d.update(isolate_gradients=1), "field 'isolate_gradients' must be bool"),
        (lambda d: d.update(stage="BLENDED"), "unknown seed stage 'BLENDED'"),
        (lambda d: d.update(stage=3), "field 'stage' must be str"),
        (lambda d: d.update(slot_id="mid"), "legacy slot name 'mid'.*'r0c1'"),
        (lambda d: d.update(extra=1), "unknown field.*'extra'"),
        (lambda d: d.update(alpha=1.5), r"'alpha' must be in \[0, 1\]"),
        (lambda d: d["stage_history"].pop(), "stage is BLENDING but stage_history ends"),
        (lambda d: d["stage_history"].insert(1, ["FOSSILIZED", 1.0]), "not a legal walk"),
        (lambda d: d.update(stage_history=[["GERMINATED", 0.0]]), "must start at DORMANT"),
        (lambda d: d["stage_history"].append("BLENDING"), r"stage_history\[4\] must be a"),
        (lambda d: d.update(previous_stage="GERMINATED"), "previous_stage is GERMINATED"),
        (lambda d: d["metrics"].pop("train_steps"), "SeedMetrics: missing required"),
        (lambda d: d.update(metrics=[]), "field 'metrics' must be Mapping"),
    ],
)
def test_seed_state_from_dict_rejects_bad_input_with_one_clear_value_error(
    mutate, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SeedState.from_dict(_broken(mutate))


def test_from_dict_does_not_mutate_its_input() -> None:
    data = _walked_state().to_dict()
    snapshot = copy.deepcopy(data)
    SeedState.from_dict(data)
    assert data == snapshot


def test_metrics_accept_ints_for_floats_but_never_bools() -> None:
    data = SeedMetrics().to_dict() | {"last_loss": 1}
    assert SeedMetrics.from_dict(data).last_loss == 1.0
    with pytest.raises(ValueError, match="'last_loss' must be float or None"):
        SeedMetrics.from_dict(data | {"last_loss": False})
