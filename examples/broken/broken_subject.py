"""The quickstart with the classic bug: at BLENDING the stage goes into extra_state as an Enum
member. Nothing fails until a checkpoint is loaded with weights_only=True."""

from __future__ import annotations

import enum

from quickstart.model import GrowingNet
from quickstart.subject import GrowingNetSubject


class Stage(enum.Enum):
    DORMANT = "DORMANT"
    GERMINATED = "GERMINATED"
    BLENDING = "BLENDING"
    FOSSILIZED = "FOSSILIZED"


class LeakyNet(GrowingNet):
    def get_extra_state(self) -> dict:
        return {
            "stages": {
                slot: Stage(stage) if stage == "BLENDING" else stage  # the bug
                for slot, stage in self.stages.items()
            }
        }


class BrokenSubject(GrowingNetSubject):
    name = "broken-growing-net"

    def build(self, *, grid, stage, seed):
        system = super().build(grid=grid, stage=stage, seed=seed)
        system["net"].__class__ = LeakyNet
        return system

    def rebuild(self, state):
        """The same net as `build` (the roundtrip compares the classes): only the Enum is
        broken."""
        system = super().rebuild(state)
        system["net"].__class__ = LeakyNet
        return system


def make_subject() -> BrokenSubject:
    return BrokenSubject()
