"""The pre-fix reference format (schema 0), as the original project wrote it: a SeedState
dataclass with Enum stages, a timezone-aware datetime, a deque of (stage, datetime) history,
a telemetry dataclass with a datetime, and the blend module kept inside extra_state (and
never removed after BLENDING). weights_only=True refuses all of it.

Test support only: `to_legacy` turns a current (schema 1) reference checkpoint into the
legacy one the fixtures generator commits, so migration can be checked against the
original."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
from typing import Any

import torch
from torch import nn

UTC = datetime.timezone.utc


class LegacySeedStage(enum.Enum):
    DORMANT = 0
    GERMINATED = 1
    TRAINING = 2
    BLENDING = 3
    PROBATIONARY = 4
    FOSSILIZED = 5
    PRUNED = 6


@dataclasses.dataclass
class LegacySeedMetrics:
    train_steps: int
    last_loss: float | None
    best_loss: float | None
    last_accuracy: float | None
    grad_norm: float | None


@dataclasses.dataclass(slots=True)
class LegacySeedState:
    seed_id: str
    slot_id: str
    blueprint: str
    stage: LegacySeedStage
    previous_stage: LegacySeedStage | None
    stage_entered_at: datetime.datetime
    stage_history: collections.deque
    epochs_in_stage: int
    epochs_total: int
    alpha: float
    isolate_gradients: bool
    metrics: LegacySeedMetrics


@dataclasses.dataclass
class LegacyTelemetryEvent:
    event_type: str
    captured_at: datetime.datetime
    payload: dict


class LegacyGate(nn.Module):
    """The blend gate as the legacy code kept it: a module object inside extra_state."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, 1)


def _when(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, tz=UTC)


def _legacy_seed(state: dict[str, Any]) -> LegacySeedState:
    stage = LegacySeedStage[state["stage"]]
    previous = state["previous_stage"]
    metrics = {k: v for k, v in state["metrics"].items() if k != "schema_version"}
    return LegacySeedState(
        seed_id=state["seed_id"],
        slot_id=state["slot_id"],
        blueprint=state["blueprint"],
        stage=stage,
        previous_stage=None if previous is None else LegacySeedStage[previous],
        stage_entered_at=_when(state["stage_entered_at"]),
        stage_history=collections.deque(
            [(LegacySeedStage[name], _when(at)) for name, at in state["stage_history"]], maxlen=100
        ),
        epochs_in_stage=state["epochs_in_stage"],
        epochs_total=state["epochs_total"],
        alpha=state["alpha"],
        isolate_gradients=state["isolate_gradients"],
        metrics=LegacySeedMetrics(**metrics),
    )


def to_legacy(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 reference checkpoint rewritten in the schema-0 (pre-fix) format."""
    state_dict = dict(checkpoint["state_dict"])
    for key in [
        k for k in state_dict if k.startswith("seed_slots.") and k.endswith("._extra_state")
    ]:
        slot_id = key.split(".")[1]
        extra = state_dict[key]
        seed, blend = extra["seed_state"], extra["blend"]
        gate = None
        if (
            blend is not None
            and blend["algorithm"] == "gated"
            and seed["stage"] in ("BLENDING", "PROBATIONARY", "FOSSILIZED")
        ):
            width = (
                checkpoint["config"]["host"].get("width") or checkpoint["config"]["host"]["d_model"]
            )
            gate = LegacyGate(width)
            prefix = f"seed_slots.{slot_id}.blend_gate."
            weights = {
                k[len(prefix) :]: state_dict.pop(k)
                for k in list(state_dict)
                if k.startswith(prefix)
            }
            if weights:  # BLENDING: the live gate; later stages: the stale copy never removed
                gate.load_state_dict(weights)
        state_dict[key] = {
            "seed_state": None if seed is None else _legacy_seed(seed),
            "blend_module": gate,
            "blend": None
            if blend is None
            else {k: v for k, v in blend.items() if k != "schema_version"},
            "seeds_started": extra["seeds_started"],
            "last_event": None
            if seed is None
            else LegacyTelemetryEvent(
                "SEED_STAGE_CHANGED", _when(seed["stage_entered_at"]), {"to": seed["stage"]}
            ),
        }
    config = {k: v for k, v in checkpoint["config"].items() if k != "seed_slots"}
    config["schema_version"] = 0
    return {"schema_version": 0, "config": config, "state_dict": state_dict}


def torch_save_legacy(checkpoint: dict[str, Any], path) -> None:
    torch.save(to_legacy(checkpoint), path)
