"""--ckpt-resume-tolerance: resumes that cannot be bit-exact pass a named profile measured
against the noise between two uninterrupted runs; real resume bugs still fail (issue 24, 2)."""

from __future__ import annotations

import math

import pytest
import torch

from pytest_ckpt.checks.tolerance import PROFILES, profile_named, tolerant_differences

# Noise seeded from os.urandom: no two runs (continued, second uninterrupted, resumed) agree
# bit for bit, as on a GPU with non-deterministic kernels. BUG=optimizer plants a real resume
# bug: rebuild() forgets the optimizer's state.
NOISY_SUBJECT = """
import os

import torch

from pytest_ckpt import ModuleSubject


class NoisySubject(ModuleSubject):
    def step(self, system):
        result = super().step(system)
        noise = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))
        with torch.no_grad():
            for parameter in system["model"].parameters():
                parameter.add_(torch.randn(parameter.shape, generator=noise) * 1e-7)
        return result

    def rebuild(self, state):
        system = super().rebuild(state)
        if os.environ.get("BUG") == "optimizer":
            system["optimizer"] = torch.optim.Adam(system["model"].parameters(), lr=1e-2)
        return system


def make():
    return NoisySubject(
        lambda: torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 1)),
        make_batch=lambda g: (torch.randn(16, 8, generator=g), torch.randn(16, 1, generator=g)),
        make_optimizer=lambda model: torch.optim.Adam(model.parameters(), lr=1e-2),
        stages={"WARMUP": 2},
        name="noisy",
    )
"""


@pytest.fixture
def noisy_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.syspathinsert()
    pytester.makepyfile(noisy_subject=NOISY_SUBJECT)
    return pytester


def _resume(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--ckpt-roundtrip", "--ckpt-subject=noisy_subject:make", "-k", "resume", *args
    )


def test_a_noisy_resume_fails_exact_and_passes_standard_chosen_in_the_ini(
    noisy_project: pytest.Pytester,
) -> None:
    """The profile from the ini twin (the option itself: the forgotten-optimizer test)."""
    exact = _resume(noisy_project, "--ckpt-resume-steps=3")
    exact.assert_outcomes(failed=1, deselected=2)
    exact.stdout.re_match_lines([r".*resuming from the checkpoint differs.*after 3 step\(s\):"])
    noisy_project.makeini("[pytest]\nckpt_resume_tolerance = standard\n")
    standard = _resume(noisy_project, "--ckpt-resume-steps=3")
    standard.assert_outcomes(passed=1, deselected=2)


def test_a_forgotten_optimizer_state_fails_standard(
    noisy_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUG", "optimizer")
    result = _resume(noisy_project, "--ckpt-resume-tolerance", "loose")
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.re_match_lines(
        [
            r".*the state before the first resumed step differs from the saved one \(exact "
            r"under every tolerance profile.*",
            r"\s+state\['optimizer'\]\['state'\]: keys missing after: \[0, 1, 2, 3\]",
        ]
    )


def test_an_unknown_profile_is_a_usage_error_naming_the_valid_ones(
    noisy_project: pytest.Pytester,
) -> None:
    result = _resume(noisy_project, "--ckpt-resume-tolerance=sloppy")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.re_match_lines(
        [r".*--ckpt-resume-tolerance: expected one of exact, strict, standard, loose.*"]
    )


STANDARD = PROFILES["standard"]


def _differences(continued, twin, resumed, profile=STANDARD):
    return tolerant_differences(continued, twin, resumed, profile, root="state")


def test_counters_and_integers_stay_exact_under_every_profile() -> None:
    base = {"step": torch.tensor(4.0), "ids": torch.tensor([1, 2]), "n": 3}
    resumed = {"step": torch.tensor(5.0), "ids": torch.tensor([1, 3]), "n": 3}
    found = {d.path for d in _differences(base, base, resumed, PROFILES["loose"])}
    assert found == {"state['step']", "state['ids']"}


def test_a_tensor_two_uninterrupted_runs_reproduce_must_resume_exactly() -> None:
    frozen = torch.linspace(0, 1, 16)
    found = _differences({"w": frozen}, {"w": frozen}, {"w": frozen + 1e-9})
    assert len(found) == 1 and "gave exactly the same values" in found[0].detail


def test_a_tensor_beyond_k_times_its_noise_fails_though_within_the_profile() -> None:
    base = torch.ones(64, dtype=torch.float64)
    twin, resumed = base + 1e-9, base + 5e-7  # 500 x noise, still within rtol=1e-4
    found = _differences({"w": base}, {"w": twin}, {"w": resumed})
    assert len(found) == 1 and "10 x the noise floor" in found[0].detail
    assert _differences({"w": base}, {"w": twin}, {"w": base + 5e-9}) == []


def test_a_scalar_gets_the_profile_bound_alone() -> None:
    """One noisy number cannot estimate its own noise: no k x noise ceiling for it."""
    assert _differences({"loss": 1.0}, {"loss": 1.0 + 1e-9}, {"loss": 1.0 + 5e-7}) == []
    found = _differences({"loss": 1.0}, {"loss": 1.0 + 1e-9}, {"loss": 1.001})
    assert len(found) == 1 and "beyond standard (rtol=0.0001" in found[0].detail


def test_nan_in_the_same_place_is_equal_and_a_new_nan_is_not() -> None:
    base = torch.tensor([math.nan, 1.0])
    assert _differences({"w": base}, {"w": base}, {"w": base.clone()}) == []
    assert _differences({"w": base}, {"w": base}, {"w": torch.tensor([math.nan, math.nan])})


def test_exact_is_no_profile_and_unknown_names_are_refused() -> None:
    assert profile_named("exact") is None
    assert profile_named("loose") is PROFILES["loose"]
    with pytest.raises(ValueError, match="use exact, strict, standard, loose"):
        profile_named("sloppy")
