"""Helpers for running pytest inside pytest against the plugin.

The runs use `runpytest_subprocess`: an in-process run unloads the modules it imported, and
torch's C extension and operator registrations cannot be loaded twice in one process. A
subprocess also loads the plugin the way users get it, through its entry point."""

from __future__ import annotations

import pytest

# A subject that plants a SeedStage enum member in the state at BLENDING: the classic bug.
LEAKY_SUBJECT = """
from pytest_ckpt.reference.lifecycle import SeedStage
from pytest_ckpt.reference.subject import ReferenceSubject


class LeakySubject(ReferenceSubject):
    def export_state(self, system):
        state = system.state_dict()
        extra = state["env"]["model"]["state_dict"]["seed_slots.r0c0._extra_state"]
        if extra["seed_state"] is not None and extra["seed_state"]["stage"] == "BLENDING":
            extra["seed_state"]["stage"] = SeedStage.BLENDING
        return state


def make():
    return LeakySubject()
"""

# A plain-module subject whose telemetry carries a label read from the environment, so a
# test can change one payload value between runs.
LABELLED_SUBJECT = """
import os

import torch

from pytest_ckpt import ModuleSubject, StepResult


class LabelledSubject(ModuleSubject):
    def step(self, system):
        result = super().step(system)
        label = os.environ.get("CKPT_TEST_LABEL", "alpha")
        return StepResult(result.metrics, [{"event": "step", "label": label}])


def make():
    return LabelledSubject(
        lambda: torch.nn.Linear(4, 1),
        make_batch=lambda g: (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)),
        name="labelled",
    )
"""


@pytest.fixture
def ckpt_pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester project with the two helper subjects importable and one plain test."""
    pytester.syspathinsert()
    pytester.makepyfile(leaky_subject=LEAKY_SUBJECT, labelled_subject=LABELLED_SUBJECT)
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    return pytester
