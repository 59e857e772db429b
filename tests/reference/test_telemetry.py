from __future__ import annotations

import datetime
import enum

import pytest

from pytest_ckpt.reference import (
    BlendConfig,
    ManualClock,
    TelemetryEvent,
    TelemetryEventType,
    TelemetryRecorder,
)
from pytest_ckpt.reference.scenarios import build_reference_model


def test_recorder_keeps_order_sequence_and_injected_time() -> None:
    recorder = TelemetryRecorder(ManualClock(start=100.0, tick=0.5))
    recorder.emit(TelemetryEventType.EPOCH_COMPLETED, epoch=1)
    recorder.emit(TelemetryEventType.SEED_PRUNED, slot_id="r0c1", seed_id="r0c1/seed1")
    events = recorder.drain()
    assert [(e.seq, e.timestamp, e.event_type) for e in events] == [
        (0, 100.0, TelemetryEventType.EPOCH_COMPLETED),
        (1, 100.5, TelemetryEventType.SEED_PRUNED),
    ]
    assert recorder.events == []
    assert recorder.emit(TelemetryEventType.EPOCH_COMPLETED, epoch=2).seq == 2


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"at": datetime.datetime(2026, 1, 1)}, r"\['at'\] is datetime.datetime"),
        ({"stages": [1, enum.Enum("E", "A").A]}, r"\['stages'\]\[1\]"),
        ({"nested": {3: "x"}}, "non-str key 3"),
        ({"ids": {"r0c0"}}, r"\['ids'\] is builtins.set"),
    ],
)
def test_non_primitive_payloads_are_refused_naming_the_path(payload: dict, path: str) -> None:
    recorder = TelemetryRecorder(ManualClock())
    with pytest.raises(TypeError, match=path):
        recorder.emit(TelemetryEventType.EPOCH_COMPLETED, **payload)
    assert recorder.next_seq == 0


def test_event_dict_round_trip_and_validation() -> None:
    recorder = TelemetryRecorder(ManualClock())
    event = recorder.emit(TelemetryEventType.SEED_GERMINATED, slot_id="r1c0", seed_id="s")
    assert TelemetryEvent.from_dict(event.to_dict()) == event
    data = event.to_dict() | {"event_type": "SEED_EXPLODED"}
    with pytest.raises(ValueError, match="unknown event type 'SEED_EXPLODED'"):
        TelemetryEvent.from_dict(data)


def test_recorder_state_restores_the_sequence_number() -> None:
    recorder = TelemetryRecorder(ManualClock())
    for _ in range(3):
        recorder.emit(TelemetryEventType.EPOCH_COMPLETED)
    other = TelemetryRecorder(ManualClock())
    other.load_state_dict(recorder.state_dict())
    assert other.emit(TelemetryEventType.EPOCH_COMPLETED).seq == 3
    with pytest.raises(ValueError, match="missing required field"):
        other.load_state_dict({"schema_version": 1})


def test_disabled_recorder_records_nothing() -> None:
    recorder = TelemetryRecorder(ManualClock(), enabled=False)
    assert recorder.emit(TelemetryEventType.EPOCH_COMPLETED) is None
    assert recorder.events == [] and recorder.next_seq == 0


def test_lifecycle_changes_are_emitted_in_order() -> None:
    model = build_reference_model("cnn", "1x1")
    model.germinate("r0c0", "conv3x3", BlendConfig("linear", 1))
    model.advance_stage("r0c0")
    model.advance_stage("r0c0")
    model.step_epoch(loss=1.0)
    model.advance_stage("r0c0")
    kinds = [(e.event_type.name, e.payload.get("to_stage")) for e in model.telemetry.drain()]
    assert kinds == [
        ("SEED_STAGE_CHANGED", "GERMINATED"),
        ("SEED_GERMINATED", "GERMINATED"),
        ("SEED_STAGE_CHANGED", "TRAINING"),
        ("SEED_STAGE_CHANGED", "BLENDING"),
        ("SEED_STAGE_CHANGED", "PROBATIONARY"),
        ("EPOCH_COMPLETED", None),
        ("SEED_STAGE_CHANGED", "FOSSILIZED"),
        ("SEED_FOSSILIZED", "FOSSILIZED"),
    ]


def test_manual_clock_state_round_trips() -> None:
    clock = ManualClock(start=5.0, tick=2.0)
    clock(), clock()
    other = ManualClock()
    other.load_state_dict(clock.state_dict())
    assert other() == clock() == 9.0
