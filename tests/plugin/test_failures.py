"""What a user sees when a checkpoint breaks: only the affected items fail, with paths."""

from __future__ import annotations

import re

LEAKY = ["--ckpt-subject", "leaky_subject:make", "--ckpt-grids", "1x1"]
ENUM_PATH = (
    "root['env']['model']['state_dict']['seed_slots.r0c0._extra_state']['seed_state']['stage']"
)


def test_an_enum_planted_at_blending_fails_only_the_blending_items_and_the_report_says_so(
    ckpt_pytester,
) -> None:
    """One run serves the terminal and the --ckpt-report file (a pytest process costs ~10 s)."""
    report = ckpt_pytester.path / "reports" / "ckpt.md"
    result = ckpt_pytester.runpytest_subprocess(
        *LEAKY,
        "--ckpt-roundtrip",
        "--ckpt-stages",
        "GERMINATED,BLENDING,PROBATIONARY",
        "--snapshot-update",
        "--ckpt-report",
        "reports/ckpt.md",
    )
    result.assert_outcomes(passed=7, failed=3)
    result.stdout.fnmatch_lines(
        [
            "FAILED ckpt::roundtrip[[]BLENDING-1x1[]]*",
            "FAILED ckpt::resume[[]BLENDING-1x1[]]*",
            "FAILED ckpt::snapshot[[]BLENDING-1x1[]]*",
        ],
        consecutive=False,
    )
    result.stdout.re_match_lines(
        [
            re.escape("CheckpointLoadError: torch.load(weights_only=True) refused the checkpoint"),
            re.escape(f"  {ENUM_PATH} is pytest_ckpt.reference.lifecycle.SeedStage (an Enum): ")
            + "store .value",
        ]
    )
    result.stdout.no_fnmatch_line("*WeightsUnpickler*")
    result.stdout.no_fnmatch_line("*FAILED ckpt::*GERMINATED*")
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.re_match_lines([r"BLENDING\s+FAIL/FAIL/FAIL", r"PROBATIONARY\s+ok/ok/ok"])

    result.stdout.fnmatch_lines(["report written to reports/ckpt.md"])
    text = report.read_text()
    assert "| BLENDING | FAIL/FAIL/FAIL |" in text
    assert "6/9 checks passed" in text
    assert "**`ckpt::roundtrip[BLENDING-1x1]`**" in text
    assert ENUM_PATH in text and "store .value" in text


def test_a_changed_telemetry_payload_fails_the_snapshot_with_a_readable_diff(
    ckpt_pytester, monkeypatch
) -> None:
    args = ["--ckpt-roundtrip", "--ckpt-subject", "labelled_subject:make", "-k", "snapshot"]
    ckpt_pytester.runpytest_subprocess(*args, "--snapshot-update").assert_outcomes(
        passed=1, deselected=3
    )

    monkeypatch.setenv("CKPT_TEST_LABEL", "beta")
    changed = ckpt_pytester.runpytest_subprocess(*args)
    changed.assert_outcomes(failed=1, deselected=3)
    changed.stdout.fnmatch_lines(
        [
            "*snapshot?TRAINING? (subject labelled) differs*",
            "*- *'label': 'alpha'*",
            "*+ *'label': 'beta'*",
        ]
    )


def test_resume_differences_name_the_path(ckpt_pytester) -> None:
    ckpt_pytester.makepyfile(
        forgetful_subject="""
from pytest_ckpt.reference.subject import ReferenceSubject


class Forgetful(ReferenceSubject):
    def rebuild(self, state):
        trainer = super().rebuild(state)
        trainer.ent_coef = trainer.config.ent_coef  # the adapted value is lost on resume
        return trainer


def make():
    return Forgetful()
"""
    )
    result = ckpt_pytester.runpytest_subprocess(
        "--ckpt-roundtrip",
        "--ckpt-subject",
        "forgetful_subject:make",
        "--ckpt-stages",
        "BLENDING",
        "--ckpt-grids",
        "1x1",
        "-k",
        "resume or roundtrip",
    )
    result.assert_outcomes(failed=2, deselected=2)
    result.stdout.fnmatch_lines(
        [
            "*RoundTripMismatch: the system rebuilt from the checkpoint exports another state:*",
            "*root[[]'ent_coef'[]]: 0.0105 != 0.01",
        ]
    )
    result.stdout.fnmatch_lines(
        [  # the cause first, then its effects
            "ResumeMismatch: system.ent_coef = 0.0105 in the continued run but 0.01 in the "
            "resumed one; export_state() holds it at root[[]'ent_coef'[]], but rebuild() does "
            "not restore it",
            "resuming from the checkpoint differs from continuing after 1 step(s):",
            "*steps[[]0[]][[]'metrics'[]][[]'ent_coef'[]]: 0.0105 != 0.01",
        ],
        consecutive=False,
    )


# A rebuild that restores the history entry for entry but without its maxlen=100: exports
# equal, resume equal (the history overflows only after 100 entries), a different system.
LOST_MAXLEN_SUBJECT = """
import collections

import torch

from pytest_ckpt import ModuleSubject


class HistorySubject(ModuleSubject):
    def step(self, system):
        result = super().step(system)
        system.setdefault("history", collections.deque(maxlen=100)).append(result.metrics["loss"])
        return result

    def export_state(self, system):
        return {**super().export_state(system), "history": list(system["history"])}

    def rebuild(self, state):
        system = super().rebuild(state)
        system["history"] = collections.deque(state["history"])
        return system


def make():
    return HistorySubject(
        lambda: torch.nn.Linear(4, 1),
        make_batch=lambda g: (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)),
        name="history",
    )
"""


def test_a_rebuild_that_loses_a_deques_maxlen_fails_roundtrip_naming_it(ckpt_pytester) -> None:
    ckpt_pytester.makepyfile(history_subject=LOST_MAXLEN_SUBJECT)
    result = ckpt_pytester.runpytest_subprocess(
        "--ckpt-roundtrip", "--ckpt-subject=history_subject:make", "-k", "roundtrip or resume"
    )
    result.assert_outcomes(passed=1, failed=1, deselected=2)
    result.stdout.fnmatch_lines(
        [
            "RoundTripMismatch: the system rebuilt from the checkpoint exports the same state but "
            "is built differently: 1 difference(s) (live != rebuilt):",
            "  system['history']: maxlen 100 != None",
        ]
    )
    result.stdout.re_match_lines([r"TRAINING\s+FAIL/ok/--"])
