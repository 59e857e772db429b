"""The bundled reference morphogenetic system: a real subject for the round-trip harness.

A host network with a grid of seed slots where seeds germinate, train in isolation, blend in
and are fossilized or pruned. Its checkpoints hold primitives and tensors only.
"""

from pytest_ckpt.reference.blending import BLEND_ALGORITHMS, BlendConfig, BlendGate
from pytest_ckpt.reference.clock import Clock, ManualClock, wall_clock
from pytest_ckpt.reference.gradients import GradientHealthMonitor, GradientReport
from pytest_ckpt.reference.hosts import (
    CNNHost,
    HostProtocol,
    InjectionPoint,
    TransformerHost,
    build_host,
)
from pytest_ckpt.reference.lifecycle import (
    TRANSITIONS,
    SeedMetrics,
    SeedStage,
    SeedState,
    allowed_next_stages,
    check_transition,
)
from pytest_ckpt.reference.model import MorphogeneticModel, load_model, save_model
from pytest_ckpt.reference.scenarios import build_at_stage, build_reference_model, drive_to_stage
from pytest_ckpt.reference.slot import SeedSlot, StageTransition
from pytest_ckpt.reference.slots import (
    SlotConfig,
    format_slot_id,
    parse_grid,
    parse_slot_id,
    slot_sort_key,
    validate_slot_id,
)
from pytest_ckpt.reference.telemetry import (
    TelemetryEvent,
    TelemetryEventType,
    TelemetryRecorder,
)

__all__ = [
    "BLEND_ALGORITHMS",
    "TRANSITIONS",
    "BlendConfig",
    "BlendGate",
    "CNNHost",
    "Clock",
    "GradientHealthMonitor",
    "GradientReport",
    "HostProtocol",
    "InjectionPoint",
    "ManualClock",
    "MorphogeneticModel",
    "SeedMetrics",
    "SeedSlot",
    "SeedStage",
    "SeedState",
    "SlotConfig",
    "StageTransition",
    "TelemetryEvent",
    "TelemetryEventType",
    "TelemetryRecorder",
    "TransformerHost",
    "allowed_next_stages",
    "build_at_stage",
    "build_host",
    "build_reference_model",
    "check_transition",
    "drive_to_stage",
    "format_slot_id",
    "load_model",
    "parse_grid",
    "parse_slot_id",
    "save_model",
    "slot_sort_key",
    "validate_slot_id",
    "wall_clock",
]
