"""Committed matrix snapshots: they hold on another CPU, fail on a real change, say plainly when
none was recorded yet, and belong to one subject."""

from __future__ import annotations

import pytest

# A plain-module subject whose trained weights can be scaled from the environment: a real change
# in what the model holds, made after the warm-up steps.
SCALED_SUBJECT = """
import os

import torch

from pytest_ckpt import ModuleSubject


class ScaledSubject(ModuleSubject):
    def build(self, *, grid, stage, seed):
        system = super().build(grid=grid, stage=stage, seed=seed)
        with torch.no_grad():
            system["model"][0].weight.mul_(float(os.environ.get("CKPT_TEST_SCALE", "1")))
        return system


def make(name="scaled"):
    return ScaledSubject(
        lambda: torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
        ),
        make_batch=lambda g: (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)),
        name=name,
    )


def make_other():
    return make("other")
"""
ARGS = ("--ckpt-roundtrip", "-k", "snapshot", "-p", "no:randomly")


@pytest.fixture
def scaled(ckpt_pytester: pytest.Pytester) -> pytest.Pytester:
    ckpt_pytester.makepyfile(scaled_subject=SCALED_SUBJECT)
    return ckpt_pytester


def run(pytester: pytest.Pytester, subject: str, *extra: str) -> pytest.RunResult:
    spec = f"scaled_subject:{subject}"
    return pytester.runpytest_subprocess(*ARGS, "--ckpt-subject", spec, *extra)


def test_a_snapshot_holds_on_another_cpu_and_fails_a_one_percent_change(
    scaled: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(scaled, "make", "--snapshot-update").assert_outcomes(passed=1, deselected=3)
    text = (scaled.path / "__ckpt_snapshots__" / "scaled" / "ckpt.ckpt-ambr").read_text()
    # what was loaded, before the resumed step moved the shared optimizer tensors (2 warm-ups)
    assert "'step': Tensor(shape=[], dtype=float32, values=[2.0])," in text
    assert "values=[3.0]" not in text

    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # another CPU's kernels
    run(scaled, "make").assert_outcomes(passed=1, deselected=3)

    monkeypatch.setenv("CKPT_TEST_SCALE", "1.01")
    changed = run(scaled, "make")
    changed.assert_outcomes(failed=1, deselected=3)
    changed.stdout.fnmatch_lines(
        [
            "*snapshot?TRAINING? (subject scaled) differs:*",
            "*float beyond tolerance: state.model.0.weight: snapshot *, now * (diff *, "
            "relative 0.01; allowed rtol=0.001, atol=1e-06)*",
            "*- *'0.weight': Tensor(shape=[[]16, 4[]], dtype=float32, norm=*",
            "*+ *'0.weight': Tensor(shape=[[]16, 4[]], dtype=float32, norm=*",
        ],
        consecutive=False,
    )


@pytest.mark.slow  # 4 pytest processes: test_snapshot_safety is the fast acceptance test
def test_each_subject_has_its_own_snapshots_and_never_deletes_anothers(
    scaled: pytest.Pytester,
) -> None:
    run(scaled, "make", "--snapshot-update").assert_outcomes(passed=1, deselected=3)
    other = run(scaled, "make_other")
    other.assert_outcomes(failed=1, deselected=3)
    other.stdout.fnmatch_lines(
        [
            "*no snapshot yet for snapshot?TRAINING? (subject other): review the state "
            "below and run with --snapshot-update to record it*"
        ]
    )
    run(scaled, "make_other", "--snapshot-update").assert_outcomes(passed=1, deselected=3)
    assert (scaled.path / "__ckpt_snapshots__" / "scaled" / "ckpt.ckpt-ambr").is_file()
    run(scaled, "make").assert_outcomes(passed=1, deselected=3)


@pytest.mark.slow  # a pytest process for a deprecated alias
def test_the_old_rounded_mode_is_an_alias_of_tolerant_with_a_warning(
    scaled: pytest.Pytester,
) -> None:
    result = run(scaled, "make", "--ckpt-snapshot-floats", "rounded", "--snapshot-update")
    result.assert_outcomes(passed=1, deselected=3, warnings=1)
    result.stdout.fnmatch_lines(["*ckpt_snapshot_floats = 'rounded' is now 'tolerant'*"])
