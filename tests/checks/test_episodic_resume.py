"""Episodic subjects: an environment's RNG is drawn only when an episode ends, so one resume
step proves nothing about it. A subject declares its own `resume_steps` (the command line
still wins), and the resume check warns, naming each generator the steps never drew from and
whether the export holds or misses it."""

from __future__ import annotations

import pytest

EPISODIC_SUBJECT = """
import os
import torch
from pytest_ckpt import StepResult


class Episodic:
    '''An episode ends every 3 steps; the reset draws the start from the env's generator.'''

    name = "episodic"
    supports_grids = False

    def __init__(self):
        if os.environ.get("RESUME_STEPS"):
            self.resume_steps = int(os.environ["RESUME_STEPS"])
        self.saves_rng = bool(os.environ.get("SAVE_RNG"))

    def stages(self):
        return ("TRAINING",)

    def build(self, *, grid, stage, seed):
        system = {"t": 0, "env_rng": torch.Generator().manual_seed(seed), "obs": torch.zeros(2)}
        for _ in range(4):  # an episode ended at t=3: the generator has moved on
            self.step(system)
        return system

    def step(self, system):
        system["t"] += 1
        if system["t"] % 3 == 0:
            system["obs"] = torch.rand(2, generator=system["env_rng"])
        else:
            system["obs"] = system["obs"] + 1
        return StepResult(metrics={"obs": system["obs"].tolist()})

    def export_state(self, system):
        state = {"t": system["t"], "obs": system["obs"].clone()}
        if self.saves_rng:
            state["env_rng"] = system["env_rng"].get_state()
        return state

    def rebuild(self, state):
        generator = torch.Generator().manual_seed(0)  # a fresh env, seeded as at the start
        if "env_rng" in state:
            generator.set_state(state["env_rng"])
        return {"t": state["t"], "env_rng": generator, "obs": state["obs"].clone()}


def make():
    return Episodic()
"""


@pytest.fixture
def episodic(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.syspathinsert()
    pytester.makepyfile(episodic_subject=EPISODIC_SUBJECT)
    return pytester


def _resume(pytester: pytest.Pytester, *options: str) -> pytest.RunResult:
    return pytester.runpytest(
        "--ckpt-roundtrip", "--ckpt-subject", "episodic_subject:make", "-k", "resume", *options
    )


def test_one_resume_step_passes_a_lost_env_rng_and_warns_that_it_was_never_drawn(
    episodic: pytest.Pytester,
) -> None:
    result = _resume(episodic)
    result.assert_outcomes(passed=1, deselected=2, warnings=1)
    result.stdout.re_match_lines(
        [
            r".*UnreadRngWarning: the 1 resume step\(s\) drew from no generator below, so the "
            r"resume check cannot tell whether each resumes: give the subject a resume_steps .*",
            r"\s+system\['env_rng'\] \(a torch.Generator\): export_state\(\) misses it",
        ]
    )


def test_a_subjects_own_resume_steps_reach_the_episode_end_and_fail_with_the_cause(
    episodic: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESUME_STEPS", "2")
    result = _resume(episodic)
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.re_match_lines(
        [
            r"E?\s*ResumeMismatch: system\['env_rng'\] \(a torch.Generator\) .*",
            r".*differs from continuing after 2 step\(s\):",
        ]
    )
    assert "UnreadRngWarning" not in result.stdout.str()
    assert result.ret == 1


def test_the_command_line_overrides_the_subjects_resume_steps(
    episodic: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESUME_STEPS", "2")
    result = _resume(episodic, "--ckpt-resume-steps=1")
    result.assert_outcomes(passed=1, deselected=2, warnings=1)


def test_a_saved_env_rng_passes_and_one_step_says_where_the_export_holds_it(
    episodic: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAVE_RNG", "1")
    result = _resume(episodic)
    result.assert_outcomes(passed=1, deselected=2, warnings=1)
    result.stdout.re_match_lines(
        [r"\s+system\['env_rng'\] \(a torch.Generator\): export_state\(\) holds it at "
         r"root\['env_rng'\]"]
    )  # fmt: skip
    monkeypatch.setenv("RESUME_STEPS", "2")
    _resume(episodic).assert_outcomes(passed=1, deselected=2)


def test_a_declared_resume_steps_that_is_not_a_positive_int_is_said(
    episodic: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESUME_STEPS", "0")
    result = _resume(episodic)
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(
        ["*SubjectError: subject episodic declares resume_steps = 0: give an int >= 1*"]
    )
    assert "Traceback" not in result.stdout.str()
