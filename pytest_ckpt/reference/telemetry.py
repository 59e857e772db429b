"""Typed telemetry: events with a type enum, primitive payloads, an ordered recorder.

Events are compared in snapshots and across resume, so they carry no random ids and no wall
clock of their own: the timestamp comes from an injected clock and order from a sequence
number that is part of the checkpoint.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_ckpt.reference.clock import Clock
from pytest_ckpt.reference.fields import ensure_primitive, read_fields

TELEMETRY_SCHEMA_VERSION = 1


class TelemetryEventType(enum.Enum):
    EPOCH_COMPLETED = "EPOCH_COMPLETED"
    SEED_GERMINATED = "SEED_GERMINATED"
    SEED_STAGE_CHANGED = "SEED_STAGE_CHANGED"
    SEED_FOSSILIZED = "SEED_FOSSILIZED"
    SEED_PRUNED = "SEED_PRUNED"
    GRADIENT_ANOMALY = "GRADIENT_ANOMALY"
    ANALYTICS_SNAPSHOT = "ANALYTICS_SNAPSHOT"
    VALUE_COLLAPSE_DETECTED = "VALUE_COLLAPSE_DETECTED"
    PPO_UPDATE_COMPLETED = "PPO_UPDATE_COMPLETED"
    BATCH_EPOCH_COMPLETED = "BATCH_EPOCH_COMPLETED"

    @classmethod
    def from_name(cls, name: Any) -> TelemetryEventType:
        if not isinstance(name, str) or name not in cls.__members__:
            raise ValueError(
                f"TelemetryEvent: unknown event type {name!r}; expected one of "
                f"{', '.join(cls.__members__)}"
            )
        return cls[name]


@dataclass(slots=True, frozen=True)
class TelemetryEvent:
    event_type: TelemetryEventType
    seq: int
    timestamp: float
    slot_id: str | None
    payload: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": TELEMETRY_SCHEMA_VERSION,
            "event_type": self.event_type.name,
            "seq": self.seq,
            "timestamp": self.timestamp,
            "slot_id": self.slot_id,
            "payload": dict(self.payload),
        }

    @classmethod
    def from_dict(cls, data: Any) -> TelemetryEvent:
        fields = read_fields(
            data,
            {
                "event_type": str,
                "seq": int,
                "timestamp": float,
                "slot_id": (str, type(None)),
                "payload": dict,
            },
            where="TelemetryEvent",
            version=TELEMETRY_SCHEMA_VERSION,
        )
        ensure_primitive(fields["payload"], where="TelemetryEvent.payload")
        return cls(
            event_type=TelemetryEventType.from_name(fields["event_type"]),
            seq=fields["seq"],
            timestamp=fields["timestamp"],
            slot_id=fields["slot_id"],
            payload=fields["payload"],
        )


class TelemetryRecorder:
    """Keeps events in emission order with a monotonically increasing sequence number.

    Payloads are checked to be primitives when emitted, so a datetime or an enum never gets as
    far as a checkpoint or a snapshot. `state_dict` holds the next sequence number (the only
    thing resume needs); the events themselves are output, not state.
    """

    def __init__(self, clock: Clock, *, enabled: bool = True) -> None:
        self.clock = clock
        self.enabled = enabled
        self.next_seq = 0
        self.events: list[TelemetryEvent] = []

    def emit(
        self, event_type: TelemetryEventType, *, slot_id: str | None = None, **payload: Any
    ) -> TelemetryEvent | None:
        if not self.enabled:
            return None
        ensure_primitive(payload, where=f"{event_type.name} payload")
        event = TelemetryEvent(
            event_type=event_type,
            seq=self.next_seq,
            timestamp=self.clock(),
            slot_id=slot_id,
            payload=payload,
        )
        self.next_seq += 1
        self.events.append(event)
        return event

    def drain(self) -> list[TelemetryEvent]:
        """Hand over the recorded events and forget them (the sequence number carries on)."""
        events, self.events = self.events, []
        return events

    def state_dict(self) -> dict[str, Any]:
        return {"schema_version": TELEMETRY_SCHEMA_VERSION, "next_seq": self.next_seq}

    def load_state_dict(self, state: Any) -> None:
        fields = read_fields(
            state,
            {"next_seq": int},
            where="TelemetryRecorder",
            version=TELEMETRY_SCHEMA_VERSION,
        )
        if fields["next_seq"] < 0:
            raise ValueError("TelemetryRecorder: field 'next_seq' must be >= 0")
        self.next_seq = fields["next_seq"]
