"""A seed slot's extra state as a real morphogenetic project wrote it before its weights_only
fix, and the project's own recursive walk that names what torch refuses in it.

The shape (PITFALLS.md, "Live objects in extra_state"): a `SeedState` dataclass holding
`stage` and `previous_stage` IntEnum members, a tz-aware `stage_entered_at`, `SeedMetrics`
and `SeedTelemetry` dataclasses (the telemetry with its own `captured_at`), a
`deque(maxlen=100)` history of `(stage, datetime)` pairs, one per transition, and from
BLENDING on the blend gate `nn.Module` kept in the extra state (never removed). The current
stage and its entry time are the same objects as the last history pair's: one memoized
object at two paths, as the project pickled them.

`offending_paths` is the yardstick: the plain walk over live objects that the project used,
10 / 15 / 17 paths at GERMINATED / BLENDING / PROBATIONARY. Fixing exactly those makes the
checkpoint load. Self-contained (stdlib and torch only), so a test can copy this file next
to a checkpoint as "the user's module".
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
from typing import Any

import torch
from torch import nn

_UTC = datetime.timezone.utc
_START = datetime.datetime(2026, 1, 1, tzinfo=_UTC)


class SeedStage(enum.IntEnum):
    DORMANT = 0
    GERMINATED = 1
    TRAINING = 2
    BLENDING = 3
    PROBATIONARY = 4
    FOSSILIZED = 5


@dataclasses.dataclass
class SeedMetrics:
    train_steps: int = 0
    last_loss: float | None = None


@dataclasses.dataclass
class SeedTelemetry:
    event_type: str
    captured_at: datetime.datetime


@dataclasses.dataclass
class SeedState:
    seed_id: str
    stage: SeedStage
    previous_stage: SeedStage
    stage_entered_at: datetime.datetime
    metrics: SeedMetrics
    telemetry: SeedTelemetry
    stage_history: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=100)
    )


class BlendGate(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, 1)


class SeedSlot(nn.Module):
    """A slot whose extra state is the live objects, as the project wrote it."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.seed = nn.Linear(width, width)
        self.width = width
        self.state: SeedState | None = None
        self.blend_module: nn.Module | None = None

    def get_extra_state(self) -> Any:
        return {"seed_state": self.state, "blend_module": self.blend_module}

    def set_extra_state(self, state: Any) -> None:
        self.state = state["seed_state"]
        self.blend_module = state["blend_module"]


class Host(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.trunk = nn.Linear(width, width)
        self.seed_slots = nn.ModuleDict({"r0c0": SeedSlot(width)})


def host_at(stage: SeedStage, *, width: int = 4) -> Host:
    """A host whose one slot walked DORMANT -> ... -> `stage`, one transition a minute."""
    torch.manual_seed(0)
    host = Host(width)
    slot = host.seed_slots["r0c0"]
    history: collections.deque = collections.deque(maxlen=100)
    previous = SeedStage.DORMANT
    for value in range(SeedStage.GERMINATED, stage + 1):
        entered = _START + datetime.timedelta(minutes=value)
        history.append((SeedStage(value), entered))
        if value > SeedStage.GERMINATED:
            previous = SeedStage(value - 1)
    current, entered = history[-1]
    slot.state = SeedState(
        seed_id="seed-0",
        stage=current,
        previous_stage=previous,
        stage_entered_at=entered,
        metrics=SeedMetrics(train_steps=int(stage) * 10, last_loss=0.5),
        telemetry=SeedTelemetry("SEED_STAGE_CHANGED", entered + datetime.timedelta(seconds=1)),
        stage_history=history,
    )
    if stage >= SeedStage.BLENDING:
        slot.blend_module = BlendGate(width)
    return host


def checkpoint_at(stage: SeedStage) -> dict[str, Any]:
    """What the project saved: the host's state_dict under a schema version."""
    return {"schema_version": 0, "state_dict": host_at(stage).state_dict()}


_PRIMITIVES = (str, bytes, int, float, bool, type(None), torch.Tensor)


def offending_paths(value: Any, path: str = "root") -> list[str]:
    """The project's own audit: every path whose object weights_only=True refuses. Each
    path of a shared object is listed. Containers torch knows are walked; a refused object
    whose fix keeps its contents (a dataclass -> dict, a deque -> list) is walked too; a
    module, Enum or datetime is replaced whole by its fix, so its insides are not listed."""
    kind = type(value)
    if kind in (bool, int, float, str, bytes, type(None)) or (
        isinstance(value, torch.Tensor) and kind in (torch.Tensor, nn.Parameter)
    ):
        return []
    if kind in (dict, collections.OrderedDict):
        found = []
        for key, item in value.items():
            found += offending_paths(item, f"{path}[{key!r}]")
        return found
    if kind in (list, tuple):
        found = []
        for index, item in enumerate(value):
            found += offending_paths(item, f"{path}[{index}]")
        return found
    found = [path]
    if isinstance(value, collections.deque):
        for index, item in enumerate(value):
            found += offending_paths(item, f"{path}[{index}]")
    elif dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            found += offending_paths(getattr(value, field.name), f"{path}.{field.name}")
    return found
