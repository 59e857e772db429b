"""The words pytest-ckpt and the systems it tests share: lifecycle stages and their transitions,
canonical slot ids `r{row}c{col}`, and slot grids `ROWSxCOLS`.

Pure Python, no torch: the plugin's options, the hypothesis strategies and the reference system
all read these, so there is one definition of each (the reference's `SeedStage` enum is built
from `LIFECYCLE_STAGES`, its `TRANSITIONS` from `STAGE_TRANSITIONS`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

Grid = tuple[int, int]

LIFECYCLE_STAGES: tuple[str, ...] = (
    "DORMANT",
    "GERMINATED",
    "TRAINING",
    "BLENDING",
    "PROBATIONARY",
    "FOSSILIZED",
    "PRUNED",
)
DEFAULT_STAGES: tuple[str, ...] = ("GERMINATED", "BLENDING", "PROBATIONARY")
DEFAULT_GRIDS = "1x1,1x3,2x2"  # the slot grids the matrix builds by default

# The one transition table, by stage name.
STAGE_TRANSITIONS: Mapping[str, tuple[str, ...]] = {
    "DORMANT": ("GERMINATED",),
    "GERMINATED": ("TRAINING", "PRUNED"),
    "TRAINING": ("BLENDING", "PRUNED"),
    "BLENDING": ("PROBATIONARY", "PRUNED"),
    "PROBATIONARY": ("FOSSILIZED", "PRUNED"),
    "FOSSILIZED": (),
    "PRUNED": (),
}
# The main line a seed walks when it is not pruned.
MAIN_LINE: tuple[str, ...] = LIFECYCLE_STAGES[:-1]

SLOT_ID = re.compile(r"r(0|[1-9][0-9]*)c(0|[1-9][0-9]*)")
# The pre-grid layout had three named positions along one row of the host.
LEGACY_SLOT_NAMES: Mapping[str, str] = {"early": "r0c0", "mid": "r0c1", "late": "r0c2"}
GRID = re.compile(r"([1-9][0-9]*)x([1-9][0-9]*)")


def format_slot_id(row: int, col: int) -> str:
    """The canonical id of the slot at (row, col); both must be non-negative ints."""
    for name, value in (("row", row), ("col", col)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"slot {name} must be an int, got {type(value).__name__}")
        if value < 0:
            raise ValueError(f"slot {name} must be >= 0, got {value}")
    return f"r{row}c{col}"


def parse_slot_id(slot_id: str) -> tuple[int, int]:
    """(row, col) of a canonical id; anything else raises ValueError naming the canonical form."""
    if not isinstance(slot_id, str):
        raise ValueError(
            f"slot id must be a str like 'r0c1', got {type(slot_id).__name__} {slot_id!r}"
        )
    match = SLOT_ID.fullmatch(slot_id)
    if match is None:
        raise ValueError(_invalid_slot_message(slot_id))
    return int(match.group(1)), int(match.group(2))


def validate_slot_id(slot_id: str) -> str:
    """Return `slot_id` unchanged if canonical, else raise ValueError naming the canonical form."""
    parse_slot_id(slot_id)
    return slot_id


def slot_sort_key(slot_id: str) -> tuple[int, int]:
    """Row-major numeric order: r0c2 < r0c10 < r1c0 (string order would put r0c10 first)."""
    return parse_slot_id(slot_id)


def _invalid_slot_message(slot_id: str) -> str:
    legacy = LEGACY_SLOT_NAMES.get(slot_id.strip().lower())
    if legacy is not None:
        return (
            f"legacy slot name {slot_id!r} is no longer accepted: use the canonical id "
            f"{legacy!r} (slot ids are 'r{{row}}c{{col}}', e.g. 'r0c1')"
        )
    return (
        f"invalid slot id {slot_id!r}: expected the canonical form 'r{{row}}c{{col}}' with "
        f"non-negative integers and no leading zeros or spaces, e.g. 'r0c1'"
    )


def parse_grid(text: str) -> Grid:
    """`"2x3"` -> (2, 3); anything else raises ValueError showing the expected form."""
    match = GRID.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"invalid grid {text!r}: expected ROWSxCOLS with positive ints, e.g. '2x2'"
        )
    return int(match.group(1)), int(match.group(2))


def grid_id(grid: Grid) -> str:
    """`(2, 3)` -> `"2x3"`, as in item ids (`BLENDING-2x3`)."""
    return f"{grid[0]}x{grid[1]}"
