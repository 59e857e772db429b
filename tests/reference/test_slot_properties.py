"""Properties of slot ids, grids and the lifecycle, over generated inputs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ckpt import strategies as cst
from pytest_ckpt.reference import strategies as rst
from pytest_ckpt.reference.lifecycle import TRANSITIONS, SeedStage, SeedState, check_transition
from pytest_ckpt.reference.slots import (
    SlotConfig,
    format_slot_id,
    parse_slot_id,
    slot_sort_key,
    validate_slot_id,
)


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_parse_inverts_format(row: int, col: int) -> None:
    assert parse_slot_id(format_slot_id(row, col)) == (row, col)


@given(st.lists(cst.slot_ids(), unique=True))
def test_sort_order_is_numeric_row_major(ids: list[str]) -> None:
    assert sorted(ids, key=slot_sort_key) == sorted(
        ids, key=lambda s: tuple(int(p) for p in s[1:].split("c"))
    )


@given(cst.invalid_slot_ids())
def test_every_invalid_id_raises_naming_the_canonical_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"r\{row\}c\{col\}|canonical id 'r0c"):
        validate_slot_id(text)


@given(rst.slot_configs())
def test_slot_configs_round_trip_and_stay_row_major(config: SlotConfig) -> None:
    assert SlotConfig.from_dict(config.to_dict()) == config
    assert list(config.slot_ids) == sorted(config.slot_ids, key=slot_sort_key)
    assert [config.index_of(s) for s in config] == list(range(config.num_slots))


def test_the_reference_lifecycle_is_the_vocabulary() -> None:
    from pytest_ckpt.vocabulary import LIFECYCLE_STAGES, STAGE_TRANSITIONS

    assert tuple(SeedStage.__members__) == LIFECYCLE_STAGES
    assert {SeedStage[k]: {SeedStage[v] for v in vs} for k, vs in STAGE_TRANSITIONS.items()} == {
        k: set(v) for k, v in TRANSITIONS.items()
    }


@given(cst.stage_paths())
def test_legal_paths_are_legal_and_their_states_round_trip(path: list[str]) -> None:
    state = SeedState.new(seed_id="s", slot_id="r0c0", blueprint="mlp", now=0.0)
    for i, name in enumerate(path[1:], start=1):
        state.enter(SeedStage[name], now=float(i))
    assert state.stage.name == path[-1]
    assert SeedState.from_dict(state.to_dict()) == state


@given(st.sampled_from(list(SeedStage)), st.sampled_from(list(SeedStage)))
def test_any_illegal_transition_raises(current: SeedStage, target: SeedStage) -> None:
    if target in TRANSITIONS[current]:
        check_transition(current, target)
    else:
        with pytest.raises(ValueError, match="illegal seed transition"):
            check_transition(current, target)


@given(rst.seed_states())
def test_generated_seed_states_round_trip(state: SeedState) -> None:
    assert SeedState.from_dict(state.to_dict()) == state


def test_strategies_check_their_arguments_eagerly() -> None:
    with pytest.raises(ValueError, match="max_rows must be an int >= 1"):
        cst.slot_grids(max_rows=0)
    with pytest.raises(ValueError, match="end_in_pruned"):
        cst.stage_paths(end_in_pruned="yes")  # type: ignore[arg-type]
