"""GrowingNet: an MLP with one optional side branch ("seed") per slot.

Everything about the growth lives in primitives: stage names and alphas in extra_state, the
slot list and stages in `config()`. That is what makes its checkpoints load with
`torch.load(weights_only=True)` at every stage.
"""

from __future__ import annotations

import torch
from torch import nn

STAGES = ("DORMANT", "GERMINATED", "BLENDING", "FOSSILIZED")
ALPHA = {"DORMANT": 0.0, "GERMINATED": 0.0, "BLENDING": 0.5, "FOSSILIZED": 1.0}


class GrowingNet(nn.Module):
    def __init__(self, slot_ids: list[str], hidden: int = 16) -> None:
        super().__init__()
        self.slot_ids = list(slot_ids)
        self.hidden = hidden
        self.trunk = nn.Sequential(nn.Linear(4, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, 1)
        self.seeds = nn.ModuleDict()
        self.stages = dict.fromkeys(self.slot_ids, "DORMANT")

    def set_stage(self, slot_id: str, stage: str) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
        if stage != "DORMANT" and slot_id not in self.seeds:
            self.seeds[slot_id] = nn.Linear(self.hidden, self.hidden)
        self.stages[slot_id] = stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        for slot_id, seed in self.seeds.items():
            h = h + ALPHA[self.stages[slot_id]] * torch.tanh(seed(h))
        return self.head(h)

    def config(self) -> dict:
        return {"slot_ids": list(self.slot_ids), "hidden": self.hidden, "stages": dict(self.stages)}

    @classmethod
    def from_config(cls, config: dict) -> GrowingNet:
        net = cls(config["slot_ids"], config["hidden"])
        for slot_id, stage in config["stages"].items():
            net.set_stage(slot_id, stage)
        return net

    def get_extra_state(self) -> dict:
        return {"stages": dict(self.stages)}

    def set_extra_state(self, state: dict) -> None:
        self.stages = dict(state["stages"])
