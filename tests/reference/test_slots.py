from __future__ import annotations

import pytest

from pytest_ckpt.reference.slots import (
    SlotConfig,
    format_slot_id,
    parse_grid,
    parse_slot_id,
    slot_sort_key,
    validate_slot_id,
)


@pytest.mark.parametrize(("row", "col"), [(0, 0), (0, 1), (3, 10), (12, 0)])
def test_format_then_parse_gives_back_the_coordinates(row: int, col: int) -> None:
    assert parse_slot_id(format_slot_id(row, col)) == (row, col)
    assert validate_slot_id(format_slot_id(row, col)) == f"r{row}c{col}"


def test_sort_key_is_numeric_row_major() -> None:
    ids = ["r1c0", "r0c10", "r0c2", "r10c0", "r2c1"]
    assert sorted(ids, key=slot_sort_key) == ["r0c2", "r0c10", "r1c0", "r2c1", "r10c0"]
    assert sorted(ids) != sorted(ids, key=slot_sort_key)  # plain string order is wrong


@pytest.mark.parametrize(
    ("legacy", "canonical"), [("early", "r0c0"), ("mid", "r0c1"), ("late", "r0c2")]
)
def test_legacy_names_are_rejected_naming_their_canonical_id(legacy: str, canonical: str) -> None:
    with pytest.raises(ValueError, match=rf"legacy slot name '{legacy}'.*'{canonical}'"):
        parse_slot_id(legacy)


@pytest.mark.parametrize("bad", ["R0C1", "r01c1", "r-1c0", "r0c", " r0c1", "r0c1 ", "", "r0c1c2"])
def test_malformed_ids_are_rejected_naming_the_canonical_form(bad: str) -> None:
    with pytest.raises(ValueError, match=r"canonical form 'r\{row\}c\{col\}'.*'r0c1'"):
        validate_slot_id(bad)


@pytest.mark.parametrize("bad", [1, None, ("r", 0)])
def test_non_string_ids_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="must be a str"):
        parse_slot_id(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("row", "col"), [(-1, 0), (0, -2), (True, 0), (0.0, 1)])
def test_format_rejects_negative_or_non_int_coordinates(row: object, col: object) -> None:
    with pytest.raises(ValueError):
        format_slot_id(row, col)  # type: ignore[arg-type]


def test_grid_is_row_major_and_sized_from_rows_times_cols() -> None:
    config = SlotConfig.grid(2, 3)
    assert config.slot_ids == ("r0c0", "r0c1", "r0c2", "r1c0", "r1c1", "r1c2")
    assert config.num_slots == 6
    assert config.index_of("r1c0") == 3
    assert config.rows == (0, 1)
    assert config.slots_in_row(1) == ("r1c0", "r1c1", "r1c2")


def test_from_ids_orders_canonically_whatever_the_input_order() -> None:
    assert SlotConfig.from_ids(["r1c0", "r0c10", "r0c2"]).slot_ids == ("r0c2", "r0c10", "r1c0")
    assert SlotConfig.from_ids(["r0c1", "r0c0"]) == SlotConfig.from_ids(["r0c0", "r0c1"])


def test_from_ids_rejects_duplicates_empty_and_legacy_names() -> None:
    with pytest.raises(ValueError, match="duplicate slot id 'r0c0'"):
        SlotConfig.from_ids(["r0c0", "r0c0"])
    with pytest.raises(ValueError, match="at least one slot"):
        SlotConfig.from_ids([])
    with pytest.raises(ValueError, match="'r0c1'"):
        SlotConfig.from_ids(["mid"])


def test_index_of_an_absent_slot_names_the_configured_ones() -> None:
    with pytest.raises(ValueError, match=r"'r5c5' is not in this SlotConfig \['r0c0'\]"):
        SlotConfig.grid(1, 1).index_of("r5c5")


def test_slot_config_dict_round_trip_and_validation() -> None:
    config = SlotConfig.from_ids(["r0c0", "r2c1"])
    assert SlotConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="schema_version 9 is not supported"):
        SlotConfig.from_dict({"schema_version": 9, "slot_ids": ["r0c0"]})
    with pytest.raises(ValueError, match="missing required field"):
        SlotConfig.from_dict({"schema_version": 1})
    with pytest.raises(ValueError, match=r"slot_ids\[1\] must be str"):
        SlotConfig.from_dict({"schema_version": 1, "slot_ids": ["r0c0", 3]})
    with pytest.raises(ValueError, match="not in row-major order"):
        SlotConfig.from_dict({"schema_version": 1, "slot_ids": ["r1c0", "r0c0"]})


def test_parse_grid() -> None:
    assert parse_grid("2x3") == (2, 3)
    for bad in ("3y2", "0x1", "2x", "x2", "2 x 2", "-1x2"):
        with pytest.raises(ValueError, match="expected ROWSxCOLS"):
            parse_grid(bad)
