"""Typed reward inputs for the controller, and the per-batch reward summary.

Rewards are computed from small frozen dataclasses rather than loose floats so that what a
reward depends on is visible at the call site and in telemetry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EPISODE_SUCCESS_THRESHOLD = 80.0  # validation accuracy (%) at the end of an episode
LOSS_REWARD_CLIP = 1.0
ACCURACY_WEIGHT = 0.01  # reward per accuracy point gained
SEED_PARAM_RENT = 1e-6  # reward cost per live seed parameter per epoch
FOSSILIZE_BONUS = 0.1


@dataclass(slots=True, frozen=True)
class ActionSpec:
    """What the controller chose: an operation and, where it needs them, its arguments."""

    operation: str
    slot_id: str | None
    blueprint: str | None
    blend: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "slot_id": self.slot_id,
            "blueprint": self.blueprint,
            "blend": self.blend,
        }


@dataclass(slots=True, frozen=True)
class ActionOutcome:
    """What applying an action did: the stage change it caused, if any."""

    action: ActionSpec
    transition: str | None  # "TRAINING->BLENDING", or None for WAIT


@dataclass(slots=True, frozen=True)
class LossRewardInputs:
    loss_before: float
    loss_after: float


@dataclass(slots=True, frozen=True)
class ContributionRewardInputs:
    accuracy_before: float
    accuracy_after: float
    live_seed_params: int
    fossilized_now: int


@dataclass(slots=True, frozen=True)
class RewardBreakdown:
    loss: float
    contribution: float

    @property
    def total(self) -> float:
        return self.loss + self.contribution


def compute_reward(
    loss: LossRewardInputs, contribution: ContributionRewardInputs
) -> RewardBreakdown:
    loss_part = max(-LOSS_REWARD_CLIP, min(LOSS_REWARD_CLIP, loss.loss_before - loss.loss_after))
    contribution_part = (
        ACCURACY_WEIGHT * (contribution.accuracy_after - contribution.accuracy_before)
        - SEED_PARAM_RENT * contribution.live_seed_params
        + FOSSILIZE_BONUS * contribution.fossilized_now
    )
    return RewardBreakdown(loss=loss_part, contribution=contribution_part)


@dataclass(slots=True, frozen=True)
class BatchSummary:
    steps: int
    reward_total: float
    reward_mean: float
    loss_component: float
    contribution_component: float
    episodes_completed: int
    episode_successes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "reward_total": self.reward_total,
            "reward_mean": self.reward_mean,
            "loss_component": self.loss_component,
            "contribution_component": self.contribution_component,
            "episodes_completed": self.episodes_completed,
            "episode_successes": self.episode_successes,
        }


@dataclass(slots=True)
class RewardSummaryAccumulator:
    """Sums one batch's rewards. Checkpoints are taken between batches, when it is empty."""

    steps: int = 0
    loss_component: float = 0.0
    contribution_component: float = 0.0
    episodes_completed: int = 0
    episode_successes: int = 0

    def add(self, reward: RewardBreakdown, *, episode_ended: bool, success: bool) -> None:
        self.steps += 1
        self.loss_component += reward.loss
        self.contribution_component += reward.contribution
        self.episodes_completed += int(episode_ended)
        self.episode_successes += int(episode_ended and success)

    def summary(self) -> BatchSummary:
        total = self.loss_component + self.contribution_component
        return BatchSummary(
            steps=self.steps,
            reward_total=total,
            reward_mean=total / self.steps if self.steps else 0.0,
            loss_component=self.loss_component,
            contribution_component=self.contribution_component,
            episodes_completed=self.episodes_completed,
            episode_successes=self.episode_successes,
        )
