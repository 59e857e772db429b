"""Data order is part of resume: a data position the checkpoint loses fails the resume check
with the samples read twice and never read, even when no metric shows it (issue 24, part 1)."""

from __future__ import annotations

import pytest
import torch

from pytest_ckpt.checks.roundtrip import check_resume
from pytest_ckpt.checks.samples import sample_order_difference, steps_samples
from pytest_ckpt.errors import ResumeMismatch, SubjectError
from pytest_ckpt.subject import StepResult

# The data position lives behind an opaque iterator (as a DataLoader's does); the loss does
# not depend on which batch was read. SAVE_POSITION=1 saves the position and skips to it.
OPAQUE_SUBJECT = """
import os

import torch

from pytest_ckpt import StepResult

SAVE_POSITION = os.environ.get("SAVE_POSITION") == "1"
ORDER = [7, 3, 11, 0, 5, 9, 2, 10, 1, 8, 4, 6]


class OpaqueDataSubject:
    name = "opaque-data"
    supports_grids = False

    def stages(self):
        return ("TRAINING",)

    def _fresh(self, seed, consumed=0):
        torch.manual_seed(seed)
        model = torch.nn.Linear(3, 1)
        batches = iter([ORDER[i : i + 2] for i in range(0, len(ORDER), 2)])
        for _ in range(consumed):
            next(batches)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return {"model": model, "optimizer": optimizer, "batches": batches, "consumed": 0}

    def build(self, *, grid, stage, seed):
        system = self._fresh(seed)
        for _ in range(2):
            self.step(system)
        return system

    def export_state(self, system):
        state = {"model": system["model"].state_dict()}
        state["optimizer"] = system["optimizer"].state_dict()
        if SAVE_POSITION:
            state["consumed"] = system["consumed"]
        return state

    def rebuild(self, state):
        system = self._fresh(0, state.get("consumed", 0))
        system["consumed"] = state.get("consumed", 0)
        system["model"].load_state_dict(state["model"])
        system["optimizer"].load_state_dict(state["optimizer"])
        return system

    def step(self, system):
        samples = next(system["batches"])
        system["consumed"] += 1
        loss = (system["model"].weight ** 2).sum()  # whichever batch was read
        system["optimizer"].zero_grad()
        loss.backward()
        system["optimizer"].step()
        return StepResult(metrics={"loss": float(loss.detach())}, samples=samples)


def make():
    return OpaqueDataSubject()
"""


@pytest.fixture
def opaque_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.syspathinsert()
    pytester.makepyfile(opaque_subject=OPAQUE_SUBJECT)
    return pytester


def _run(pytester: pytest.Pytester) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--ckpt-roundtrip",
        "--ckpt-subject",
        "opaque_subject:make",
        "--ckpt-resume-steps=2",
        "-k",
        "resume",
    )


def test_a_data_position_that_is_not_saved_fails_resume_with_the_samples(
    opaque_project: pytest.Pytester,
) -> None:
    result = _run(opaque_project)
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.re_match_lines(
        [
            r"ResumeMismatch: data order: 4 samples read twice, 4 never read over 2 "
            r"step\(s\) after the checkpoint \(first read twice: 7, first never read: 5\).*",
            r".*system\['consumed'\] = 2 in the continued run but 0 in the resumed one.*",
            r"\(the metrics and the final state are equal: they do not show it\)",
            r"FAILED ckpt::resume\[TRAINING\].*",
        ]
    )
    assert result.ret == 1


def test_a_saved_data_position_passes_resume(
    opaque_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAVE_POSITION", "1")
    result = _run(opaque_project)
    result.assert_outcomes(passed=1, deselected=2)
    assert result.ret == 0


def _result(*samples: object) -> StepResult:
    return StepResult(metrics={}, samples=samples)


def test_the_same_samples_in_another_order_name_the_first_position() -> None:
    text = sample_order_difference([1, 2, 3, 4], [1, 3, 2, 4], 2)
    assert text is not None and "same samples in another order" in text
    assert "sample #1 is 3, the continued run read 2" in text


def test_equal_samples_or_none_reported_pass() -> None:
    assert sample_order_difference([1, 2], [1, 2], 1) is None
    assert sample_order_difference(None, None, 1) is None
    assert steps_samples([StepResult(metrics={})]) is None


def test_samples_reported_by_one_run_only_fail() -> None:
    text = sample_order_difference([1, 2], None, 1)
    assert text is not None and "only the continued run reported" in text


def test_a_step_that_stops_reporting_samples_differs_from_one_that_reports_them() -> None:
    silent = steps_samples([_result(1), StepResult(metrics={})])
    assert silent == [1, None]
    assert sample_order_difference([1, 2], silent, 2) is not None


def test_sample_ids_must_be_ints_or_strings() -> None:
    with pytest.raises(SubjectError, match="step 2 holds a float: sample ids are ints"):
        steps_samples([_result(1), _result(2.5)])


def test_hostile_sample_ids_are_shown_escaped_and_shortened() -> None:
    text = sample_order_difference(["a"], ["\x1b[31m" + "x" * 100], 1)
    assert text is not None and "\x1b" not in text and "\\x1b" in text
    assert "x" * 60 not in text


class _CountingSubject:
    """Samples from a counter the checkpoint leaves out; metrics that never change."""

    name = "counting"
    supports_grids = False

    def stages(self):
        return ("TRAINING",)

    def build(self, *, grid, stage, seed):
        return {"next": 0, "w": torch.zeros(2)}

    def export_state(self, system):
        return {"w": system["w"].clone()}

    def rebuild(self, state):
        return {"next": 0, "w": state["w"].clone()}

    def step(self, system):
        system["next"] += 3
        return StepResult(metrics={"loss": 1.0}, samples=range(system["next"] - 3, system["next"]))


def test_the_samples_line_comes_first_even_when_nothing_else_differs(tmp_path) -> None:
    subject = _CountingSubject()
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    subject.step(system)
    with pytest.raises(ResumeMismatch) as caught:
        check_resume(subject, system, 1, tmp_path / "a.pt")
    first, *rest = str(caught.value).splitlines()
    assert first.startswith("data order: 3 samples read twice, 3 never read over 1 step(s)")
    assert "(first read twice: 0, first never read: 3)" in first
    assert rest[-1] == "(the metrics and the final state are equal: they do not show it)"
