"""A roundtrip failure names every object torch refuses: the terminal the first lines and how
many more (all of them with -v), the --ckpt-report report all of them, aliases included."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_ckpt.plugin.report import SHOWN_ITEMS
from tests.support.seed_slot_state import SeedStage, checkpoint_at, offending_paths

STAGES = ("GERMINATED", "BLENDING", "PROBATIONARY")

# The seed slot of issue 19 as a user's subject: its export is the host's state_dict, with
# the live SeedState and blend gate in the slot's extra state.
SEED_SLOT_SUBJECT = """
from pytest_ckpt import StepResult
from seed_slot_state import Host, SeedStage, host_at


class SeedSlotSubject:
    name = "seed-slot"
    supports_grids = False

    def stages(self):
        return ("GERMINATED", "BLENDING", "PROBATIONARY")

    def build(self, *, grid, stage, seed):
        return host_at(SeedStage[stage])

    def export_state(self, system):
        return {"schema_version": 0, "state_dict": system.state_dict()}

    def rebuild(self, state):
        host = Host()
        host.load_state_dict(state["state_dict"])
        return host

    def step(self, system):
        return StepResult(metrics={})


def make():
    return SeedSlotSubject()
"""


@pytest.fixture
def seed_slot_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.syspathinsert()
    support = Path(__file__).parents[1] / "support" / "seed_slot_state.py"
    pytester.makepyfile(
        seed_slot_state=support.read_text(encoding="utf-8"),
        seed_slot_subject=SEED_SLOT_SUBJECT,
    )
    return pytester


def _run(project: pytest.Pytester, *extra: str) -> pytest.RunResult:
    return project.runpytest_subprocess(
        "--ckpt-roundtrip",
        "--ckpt-subject=seed_slot_subject:make",
        "-k",
        "roundtrip",
        "-p",
        "no:cacheprovider",
        *extra,
    )


def _named_paths(text: str) -> list[str]:
    return re.findall(r"^  (root\S*) is ", text, flags=re.MULTILINE)


def _failure_blocks(text: str) -> dict[str, str]:
    """The text of each stage's failure: from its header to the next one."""
    headers = [(m.start(), m.group(1)) for m in re.finditer(r"roundtrip\[(\w+)\]", text)]
    blocks: dict[str, str] = {}
    for (start, stage), (end, _) in zip(headers, [*headers[1:], (len(text), "")], strict=True):
        blocks[stage] = blocks.get(stage, "") + text[start:end]
    return blocks


def test_the_report_and_the_terminal_name_every_refused_object(seed_slot_project) -> None:
    result = _run(seed_slot_project, "--ckpt-report=ckpt.md")
    result.assert_outcomes(failed=3)
    expected = {s: offending_paths(checkpoint_at(SeedStage[s])) for s in STAGES}
    assert [len(paths) for paths in expected.values()] == [10, 15, 17]

    report = _failure_blocks((seed_slot_project.path / "ckpt.md").read_text(encoding="utf-8"))
    for stage in STAGES:
        assert _named_paths(report[stage]) == expected[stage]
        assert f"refused the checkpoint: {len(expected[stage])} object(s)" in report[stage]

    terminal = _failure_blocks(result.stdout.str())
    assert _named_paths(terminal["GERMINATED"]) == expected["GERMINATED"]
    for stage in ("BLENDING", "PROBATIONARY"):
        assert _named_paths(terminal[stage]) == expected[stage][:SHOWN_ITEMS]
        more = len(expected[stage]) - SHOWN_ITEMS
        assert f"  ... and {more} more (all in ckpt.md and with -v)" in terminal[stage]


@pytest.mark.slow  # 8 s: -v's terminal list; the report test covers every object
def test_verbose_lists_every_refused_object_in_the_terminal(seed_slot_project) -> None:
    result = _run(seed_slot_project, "-v", "--ckpt-stages=PROBATIONARY")
    result.assert_outcomes(failed=1)
    paths = _named_paths(result.stdout.str())
    assert paths == offending_paths(checkpoint_at(SeedStage.PROBATIONARY))
    assert paths[-1].endswith("['blend_module']")  # the one a reviewer must see
