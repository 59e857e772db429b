"""The ordered slot set a model is sized from (slot ids themselves: `pytest_ckpt.vocabulary`).

Rows are injection depths in the host, columns are parallel slots at one depth. Every
structure that depends on how many slots exist (policy heads, masks, telemetry) is sized
from a `SlotConfig`, never from a hard-coded count or an enum of slot names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pytest_ckpt.reference.fields import read_fields
from pytest_ckpt.vocabulary import (
    LEGACY_SLOT_NAMES,
    format_slot_id,
    parse_grid,
    parse_slot_id,
    slot_sort_key,
    validate_slot_id,
)

__all__ = [
    "LEGACY_SLOT_NAMES",
    "SlotConfig",
    "format_slot_id",
    "parse_grid",
    "parse_slot_id",
    "slot_sort_key",
    "validate_slot_id",
]

SLOT_CONFIG_SCHEMA_VERSION = 1


@dataclass(slots=True, frozen=True)
class SlotConfig:
    """An ordered, immutable set of canonical slot ids, kept in row-major order.

    Order is canonical (sorted by `slot_sort_key`) so that the same set of slots always gives
    the same head layout and the same `index_of`, whatever order a user listed them in.
    """

    slot_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.slot_ids, tuple):
            raise ValueError("SlotConfig.slot_ids must be a tuple; use SlotConfig.from_ids(...)")
        if not self.slot_ids:
            raise ValueError("a SlotConfig needs at least one slot")
        for slot_id in self.slot_ids:
            validate_slot_id(slot_id)
        seen: set[str] = set()
        for slot_id in self.slot_ids:
            if slot_id in seen:
                raise ValueError(f"duplicate slot id {slot_id!r} in SlotConfig")
            seen.add(slot_id)
        if list(self.slot_ids) != sorted(self.slot_ids, key=slot_sort_key):
            raise ValueError(
                "SlotConfig.slot_ids must be in row-major order; use SlotConfig.from_ids(...)"
            )

    @classmethod
    def from_ids(cls, slot_ids: Iterable[str]) -> SlotConfig:
        ids = list(slot_ids)
        for slot_id in ids:
            validate_slot_id(slot_id)
        return cls(tuple(sorted(ids, key=slot_sort_key)))

    @classmethod
    def grid(cls, rows: int, cols: int) -> SlotConfig:
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"grid rows must be an int >= 1, got {rows!r}")
        if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
            raise ValueError(f"grid cols must be an int >= 1, got {cols!r}")
        return cls(tuple(format_slot_id(r, c) for r in range(rows) for c in range(cols)))

    @property
    def num_slots(self) -> int:
        return len(self.slot_ids)

    @property
    def rows(self) -> tuple[int, ...]:
        """The distinct injection depths used, ascending."""
        return tuple(sorted({parse_slot_id(s)[0] for s in self.slot_ids}))

    def index_of(self, slot_id: str) -> int:
        validate_slot_id(slot_id)
        try:
            return self.slot_ids.index(slot_id)
        except ValueError:
            raise ValueError(
                f"slot {slot_id!r} is not in this SlotConfig {list(self.slot_ids)}"
            ) from None

    def slots_in_row(self, row: int) -> tuple[str, ...]:
        return tuple(s for s in self.slot_ids if parse_slot_id(s)[0] == row)

    def __iter__(self):
        return iter(self.slot_ids)

    def __len__(self) -> int:
        return len(self.slot_ids)

    def __contains__(self, slot_id: object) -> bool:
        return slot_id in self.slot_ids

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SLOT_CONFIG_SCHEMA_VERSION, "slot_ids": list(self.slot_ids)}

    @classmethod
    def from_dict(cls, data: Any) -> SlotConfig:
        fields = read_fields(
            data, {"slot_ids": list}, where="SlotConfig", version=SLOT_CONFIG_SCHEMA_VERSION
        )
        ids = fields["slot_ids"]
        for i, slot_id in enumerate(ids):
            if not isinstance(slot_id, str):
                raise ValueError(
                    f"SlotConfig: slot_ids[{i}] must be str, got {type(slot_id).__name__}"
                )
        config = cls.from_ids(ids)
        if list(config.slot_ids) != ids:
            raise ValueError(f"SlotConfig: slot_ids {ids} are not in row-major order")
        return config
