"""How a seed's output is faded into the host during BLENDING.

Three alpha schedules over blend progress p in [0, 1]: linear, sigmoid and gated. The gated
schedule adds a learned per-sample gate. The gate is an `nn.Module` and so it is a registered
submodule of the slot (its weights live in the state_dict), never an object in extra_state;
it exists only while the seed is BLENDING. `BlendConfig` is the primitive description that
travels in the checkpoint so a loader rebuilds the *same* schedule, gate included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pytest_ckpt.reference.fields import read_fields

BLEND_SCHEMA_VERSION = 1
BLEND_ALGORITHMS = ("linear", "sigmoid", "gated")
_SIGMOID_STEEPNESS = 12.0


@dataclass(slots=True, frozen=True)
class BlendConfig:
    """Which schedule blends a seed in, and over how many epochs."""

    algorithm: str
    total_epochs: int

    def __post_init__(self) -> None:
        if self.algorithm not in BLEND_ALGORITHMS:
            raise ValueError(
                f"unknown blend algorithm {self.algorithm!r}; expected one of "
                f"{', '.join(BLEND_ALGORITHMS)}"
            )
        if isinstance(self.total_epochs, bool) or not isinstance(self.total_epochs, int):
            raise ValueError("BlendConfig.total_epochs must be an int")
        if self.total_epochs < 1:
            raise ValueError(f"BlendConfig.total_epochs must be >= 1, got {self.total_epochs}")

    @property
    def uses_gate(self) -> bool:
        return self.algorithm == "gated"

    def alpha_at(self, epochs_done: int) -> float:
        """Scalar alpha after `epochs_done` blending epochs; exactly 0.0 at 0 and 1.0 at the end."""
        progress = min(max(epochs_done / self.total_epochs, 0.0), 1.0)
        if self.algorithm == "sigmoid":
            return _normalised_sigmoid(progress)
        return progress  # linear, and the base of the gated schedule

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": BLEND_SCHEMA_VERSION,
            "algorithm": self.algorithm,
            "total_epochs": self.total_epochs,
        }

    @classmethod
    def from_dict(cls, data: Any) -> BlendConfig:
        fields = read_fields(
            data,
            {"algorithm": str, "total_epochs": int},
            where="BlendConfig",
            version=BLEND_SCHEMA_VERSION,
        )
        return cls(**fields)


def _normalised_sigmoid(progress: float) -> float:
    """A sigmoid ramp rescaled so that it hits 0.0 and 1.0 exactly at the ends."""
    if progress <= 0.0:
        return 0.0
    if progress >= 1.0:
        return 1.0
    k = _SIGMOID_STEEPNESS

    def sig(z: float) -> float:
        return 1.0 / (1.0 + math.exp(-z))

    low, high = sig(-k / 2), sig(k / 2)
    return (sig(k * (progress - 0.5)) - low) / (high - low)


class BlendGate(nn.Module):
    """A learned per-sample gate g(h) in (0, 1), pooled over everything but batch and channel."""

    def __init__(self, width: int, layout: str) -> None:
        super().__init__()
        if layout not in ("nchw", "ntc"):
            raise ValueError(f"unknown activation layout {layout!r}")
        self.layout = layout
        self.proj = nn.Linear(width, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        pooled = h.flatten(2).mean(-1) if self.layout == "nchw" else h.mean(1)
        gate = torch.sigmoid(self.proj(pooled))  # (batch, 1)
        return gate.view(gate.shape[0], *([1] * (h.dim() - 1)))


def gated_alpha(alpha: float, gate: torch.Tensor) -> torch.Tensor:
    """Modulate the scheduled alpha by the gate while keeping 0 at the start and 1 at the end.

    alpha * (1 + (1 - alpha) * (2g - 1)) stays within [alpha**2, alpha * (2 - alpha)], so the
    hand-over to PROBATIONARY (alpha exactly 1.0, gate discarded) is continuous.
    """
    return alpha * (1.0 + (1.0 - alpha) * (2.0 * gate - 1.0))
