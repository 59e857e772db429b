"""Data order across a resume: did the resumed run read the samples the continued run read?

A data loader's position lives behind an opaque iterator. A checkpoint that does not save it
restarts the epoch (or reshuffles) after a resume: samples already trained on are read again
and others are never read. The loss seldom shows it (it hardly depends on which batch was
read), so the ids a subject reports in `StepResult.samples` are compared exactly, under every
tolerance profile, and said before any metric difference.

"Read twice" are the samples the resumed run read beyond what the continued run read over the
same steps (within an epoch every sample is read once, so these were read before the
checkpoint, or are read ahead of their turn); "never read" are those the continued run read
and the resumed run did not. Ids come from the subject: they are shown with `repr`, shortened.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from pytest_ckpt.errors import SubjectError

_SHOWN_CHARS = 40


def steps_samples(results: Sequence[Any]) -> list[Any] | None:
    """The ids every step reported, in order, or None when no step reported samples.
    A run in which some steps report samples and others do not is one list with a `None`
    marker per silent step, so it never equals a run that reported them all."""
    if all(getattr(r, "samples", None) is None for r in results):
        return None
    ids: list[Any] = []
    for number, result in enumerate(results, 1):
        samples = getattr(result, "samples", None)
        if samples is None:
            ids.append(None)
            continue
        if isinstance(samples, (str, bytes)):
            samples = [samples]  # one id, not its characters
        bad = [s for s in samples if isinstance(s, bool) or not isinstance(s, (int, str))]
        if bad:
            raise SubjectError(
                f"StepResult.samples of step {number} holds a {type(bad[0]).__name__}: sample "
                "ids are ints or strings (dataset indices, keys)"
            )
        ids.extend(samples)
    return ids


def sample_order_difference(
    continued: Sequence[Any] | None,
    resumed: Sequence[Any] | None,
    steps: int,
    fix: str | None = None,
) -> str | None:
    """One line saying how the resumed run's samples differ from the continued run's, or
    None when they are the same ids in the same order (or neither run reported any).
    `fix`: the subject's own advice (its framework's way to keep a loader's position),
    said instead of the generic one."""
    if continued is None and resumed is None:
        return None
    over = f"over {steps} step(s) after the checkpoint"
    if continued is None or resumed is None:
        which = "continued" if continued is not None else "resumed"
        return (
            f"data order: only the {which} run reported StepResult.samples {over}: a step "
            "must report the samples it read on every run"
        )
    if list(continued) == list(resumed):
        return None
    twice = Counter(resumed) - Counter(continued)
    never = Counter(continued) - Counter(resumed)
    if not twice and not never:
        first = next(i for i, (a, b) in enumerate(zip(continued, resumed, strict=True)) if a != b)
        return (
            f"data order: the resumed run read the same samples in another order {over}: "
            f"sample #{first} is {_show(resumed[first])}, the continued run read "
            f"{_show(continued[first])}; "
            + (fix or "the checkpoint does not restore the sampler's shuffle (its generator state)")
        )
    first_twice = next(s for s in resumed if s in twice)
    first_never = next((s for s in continued if s in never), None)
    never_text = "" if first_never is None else f", first never read: {_show(first_never)}"
    return (
        f"data order: {sum(twice.values())} samples read twice, {sum(never.values())} never "
        f"read {over} (first read twice: {_show(first_twice)}{never_text}); "
        + (
            fix
            or "the checkpoint does not restore the data loader's position: save the sampler's "
            "generator state and the batches consumed in the epoch (or a StatefulDataLoader's "
            "state_dict())"
        )
    )


def _show(sample: Any) -> str:
    text = repr(sample)
    text = text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
    return text.encode("ascii", "backslashreplace").decode("ascii")
