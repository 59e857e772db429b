"""A deterministic clock for the subject's build, step and rebuild, as its modules see it:
one module does `import time, datetime`, the other `from datetime import datetime` and
`from time import monotonic`. With the clock the continued and the resumed run agree and the
snapshot holds the same time on every run; without it they differ by time alone."""

from __future__ import annotations

import pytest

STAMP_MODULE = """
import datetime
import time


def stamp():
    return {
        "wall": time.time(),
        "mono": time.monotonic(),
        "now": datetime.datetime.now().timestamp(),
        "utc": datetime.datetime.utcnow().isoformat(),
    }
"""
STAMP_FROM_MODULE = """
from datetime import datetime, timezone
from time import monotonic


def stamp():
    now = datetime.now(timezone.utc)
    is_dt = isinstance(now, datetime)
    return {"from_now": now.timestamp(), "from_mono": monotonic(), "is_dt": is_dt}
"""
CLOCKED_SUBJECT = """
import torch

import stamp_from
import stamp_plain
from pytest_ckpt import ModuleSubject, StepResult


class ClockedSubject(ModuleSubject):
    def step(self, system):
        result = super().step(system)
        plain, other = stamp_plain.stamp(), stamp_from.stamp()
        metrics = dict(result.metrics)
        metrics.update({k: v for k, v in plain.items() if k != "utc"})
        metrics.update({k: float(v) for k, v in other.items()})
        return StepResult(metrics, [{"event": "step", "at": plain["utc"]}])


def subject(clocked=True):
    made = ClockedSubject(
        lambda: torch.nn.Linear(4, 1),
        make_batch=lambda g: (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)),
        name="clocked",
    )
    if clocked:
        made.clock_modules = ("stamp_plain", "stamp_from")
    return made


def unclocked():
    return subject(clocked=False)
"""
USER_TEST = """
import datetime

import stamp_from
import stamp_plain


def test_frozen(ckpt_clock):
    clock = ckpt_clock(stamp_plain, "stamp_from")
    first, second = stamp_plain.stamp(), stamp_plain.stamp()
    assert first == second and first["utc"] == "2024-01-01T00:00:00"
    assert stamp_from.stamp() == {"from_now": first["wall"], "from_mono": 1000.0, "is_dt": True}
    clock.advance(60)
    assert stamp_plain.stamp()["mono"] == 1060.0


def test_restored_after_the_test():
    assert stamp_plain.datetime is datetime
    assert stamp_plain.stamp()["utc"] > "2025"
"""


@pytest.fixture
def clocked(ckpt_pytester: pytest.Pytester) -> pytest.Pytester:
    ckpt_pytester.makepyfile(
        stamp_plain=STAMP_MODULE, stamp_from=STAMP_FROM_MODULE, clocked_subject=CLOCKED_SUBJECT
    )
    return ckpt_pytester


def run(pytester: pytest.Pytester, factory: str, *extra: str) -> pytest.RunResult:
    spec = f"clocked_subject:{factory}"
    return pytester.runpytest_subprocess("--ckpt-roundtrip", "--ckpt-subject", spec, *extra)


@pytest.mark.slow  # 6 s: the negative control of the clock test below
def test_without_a_clock_the_resume_differs_by_time_alone(clocked: pytest.Pytester) -> None:
    result = run(clocked, "unclocked", "-k", "resume")
    result.assert_outcomes(failed=1, deselected=3)
    result.stdout.fnmatch_lines(["*steps*wall*"], consecutive=False)


def test_the_subjects_clock_modules_make_resume_and_snapshot_deterministic(
    clocked: pytest.Pytester,
) -> None:
    run(clocked, "subject", "--snapshot-update").assert_outcomes(passed=4)
    text = next(clocked.path.rglob("ckpt.ckpt-ambr")).read_text()
    assert "'at': '2024-01-01T00:00:00'" in text and "'is_dt': 1.0" in text
    run(clocked, "subject").assert_outcomes(passed=4)


def test_the_ckpt_clock_fixture_freezes_the_named_modules_until_the_test_ends(
    clocked: pytest.Pytester,
) -> None:
    clocked.makepyfile(test_clock_user=USER_TEST)
    result = clocked.runpytest_subprocess("test_clock_user.py", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
