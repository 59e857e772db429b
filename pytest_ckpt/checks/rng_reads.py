"""Random generators the resume steps never drew from: what a passing resume did not prove.

An environment's RNG is drawn only when an episode ends, a sampler's generator only when an
epoch starts. Resume steps that reach neither compare runs that never read it, so a
checkpoint that holds it wrongly, or not at all, passes. Each generator the live system holds
(`hidden_state` leaves: torch generators, numpy generators) whose state is the same before and
after the continued steps is said in one line: where it is, whether `export_state()` holds it
(found by value), and that the subject's `resume_steps` should reach a step that draws from it.
The process-wide RNGs are left out: nearly every subject saves them whether a step reads them
or not.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from pytest_ckpt.checks.diagnose import ExportIndex, same
from pytest_ckpt.checks.hidden_state import Capture

_GENERATORS = ("generator", "numpy generator")


class UnreadRngWarning(UserWarning):
    """The resume check passed, or failed, without its steps drawing from a generator the
    system holds: it proves nothing about that generator's restore."""


def unread_generators(exported: Mapping[str, Any], before: Capture, after: Capture) -> list[str]:
    """One line per generator held by the system that the continued steps did not draw from."""
    index: ExportIndex | None = None
    lines = []
    for path, leaf in before.leaves.items():
        later = after.leaves.get(path)
        if leaf.kind not in _GENERATORS or later is None or not same(leaf.value, later.value):
            continue
        index = index or ExportIndex(exported)
        where = _held_at(index, leaf.value)
        held = "export_state() holds it at " + where if where else "export_state() misses it"
        lines.append(f"{path} (a {leaf.owner}): {held}")
    return lines


def warn_unread_generators(
    exported: Mapping[str, Any], before: Capture, after: Capture, steps: int
) -> None:
    """A `UnreadRngWarning` naming the generators the `steps` resume steps never drew from."""
    lines = unread_generators(exported, before, after)
    if lines:
        head = (
            f"the {steps} resume step(s) drew from no generator below, so the resume check "
            "cannot tell whether each resumes: give the subject a resume_steps that reaches a "
            "step drawing from it (an episode's end, an epoch's start), or --ckpt-resume-steps"
        )
        warnings.warn(UnreadRngWarning("\n  ".join([head, *lines])), stacklevel=3)


def _held_at(index: ExportIndex, state: Any) -> str | None:
    import torch

    if isinstance(state, torch.Tensor):  # a torch.Generator's state: no other tensor equals it
        return index.find_tensor(state, "", by_value=True)
    return index.find_equal(state)
