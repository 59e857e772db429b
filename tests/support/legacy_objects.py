"""Legacy (pre-fix) objects that weights_only refuses, for migration tests. Test support
only: the product never defines or imports these."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum

import torch


class LegacyStage(enum.Enum):
    DORMANT = 0
    BLENDING = 3


@dataclasses.dataclass(slots=True)
class LegacyMetrics:
    last_loss: float
    captured_at: datetime.datetime


@dataclasses.dataclass
class LegacySeedState:
    stage: LegacyStage
    previous_stage: LegacyStage | None
    stage_entered_at: datetime.datetime
    history: collections.deque
    metrics: LegacyMetrics


class LegacyBlend(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.steepness = 12.0
        self.gate = torch.nn.Linear(4, 1)
        self.register_buffer("calls", torch.tensor(3))


UTC = datetime.timezone.utc


def legacy_state() -> dict:
    torch.manual_seed(0)
    when = datetime.datetime(2026, 3, 1, 12, 30, 5, 250, tzinfo=UTC)
    return {
        "state_dict": {"w": torch.arange(6.0).reshape(2, 3)},
        "seed_state": LegacySeedState(
            stage=LegacyStage.BLENDING,
            previous_stage=LegacyStage.DORMANT,
            stage_entered_at=when,
            history=collections.deque([(LegacyStage.DORMANT, when)], maxlen=100),
            metrics=LegacyMetrics(0.5, when),
        ),
        "blend": LegacyBlend(),
        "tags": {"a", "b"},
        "day": datetime.date(2026, 1, 2),
    }
