"""The checks themselves: save -> load(weights_only=True) -> rebuild -> compare, and resume.

No pytest here: these functions raise `CheckpointError`s whose messages say what failed and
where, and the plugin turns them into test failures. Every load goes through
`checks.loading.save_and_load`: `torch.load(weights_only=True)` with no allowlist, a refusal
explained by path. Every call into the subject goes through `checks.calls.call_subject`, so a
failure in the subject's own code reads as a `SubjectError` with its cause first. A resume
that differs is diagnosed (`checks.diagnose`) before its effects are listed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_ckpt.checks.calls import call_subject
from pytest_ckpt.checks.compare import Difference, diff_values
from pytest_ckpt.checks.diagnose import diagnose_rebuild, diagnose_resume
from pytest_ckpt.checks.hidden_state import capture, global_rng_states, set_global_rng_states
from pytest_ckpt.checks.live_structure import describe_structure, structure_differences
from pytest_ckpt.checks.loading import save_and_load
from pytest_ckpt.checks.rng_reads import warn_unread_generators
from pytest_ckpt.checks.samples import sample_order_difference, steps_samples
from pytest_ckpt.checks.tolerance import ResumeTolerance, tolerant_differences
from pytest_ckpt.errors import CheckpointError, ResumeMismatch, RoundTripMismatch, SubjectError
from pytest_ckpt.subject import StepResult, Subject

WALL_CLOCK_KEYS = ("timestamp", "time", "created", "wall_time")
WALL_CLOCK_PLACEHOLDER = "<wall-clock>"
_SHOWN = 5


def _lines(differences: list[Difference], header: str, causes: Sequence[str], shown: int) -> str:
    lines = [causes[0]] if causes else []
    lines += [f"  and: {cause}" for cause in causes[1:shown]]
    if len(causes) > shown:
        lines.append(
            f"  ... and {len(causes) - shown} more differences in the live state (-v shows all)"
        )
    lines.append(header)
    lines += [f"  {d}" for d in differences[:shown]]
    if len(differences) > shown:
        lines.append(f"  ... and more (first {shown} shown; -v shows all)")
    return "\n".join(lines)


def _mismatch(
    error: type[CheckpointError],
    differences: list[Difference],
    header: str,
    causes: Sequence[str] = (),
    *,
    verbose: bool = False,
) -> CheckpointError:
    """The causes first (the first one on the message's first line), then the effects; the
    first `_SHOWN` of each unless `verbose` (pytest's -v), which shows them all. The whole
    message rides along (`full`) for the `--ckpt-report` report: nothing is lost there."""
    whole = _lines(differences, header, causes, max(len(causes), len(differences)))
    return error(whole if verbose else _lines(differences, header, causes, _SHOWN), full=whole)


@dataclass(slots=True, frozen=True)
class RoundTrip:
    state: Mapping[str, Any]  # what the live system exported
    loaded: Any  # what torch.load(weights_only=True) gave back
    rebuilt: Any  # a fresh system rebuilt from `loaded`


def check_roundtrip(
    subject: Subject,
    system: Any,
    path: str | os.PathLike[str],
    *,
    keep_loaded: bool = False,
    verbose: bool = False,
) -> RoundTrip:
    """Export, save, load with weights_only=True, compare exactly, rebuild, compare again,
    compare the live and the rebuilt system's structure; if the subject has a forward `probe`,
    the live and the rebuilt system's outputs must be equal.

    With `keep_loaded`, `RoundTrip.loaded` is a copy taken before the rebuild: a rebuilt
    optimizer shares the loaded tensors (`load_state_dict` keeps them), so stepping the rebuilt
    system would otherwise change what `loaded` shows. `verbose` lists every difference.
    """
    import copy

    state = call_subject(subject, "export_state", system)
    loaded = save_and_load(state, path)
    differences = diff_values(state, loaded)
    if differences:
        raise _mismatch(
            RoundTripMismatch, differences, "state changed through save/load:", verbose=verbose
        )
    kept = copy.deepcopy(loaded) if keep_loaded else loaded
    rebuilt = call_subject(subject, "rebuild", loaded)
    differences = diff_values(state, call_subject(subject, "export_state", rebuilt))
    if differences:
        raise _mismatch(
            RoundTripMismatch,
            differences,
            "the system rebuilt from the checkpoint exports another state:",
            verbose=verbose,
        )
    _check_structure(system, rebuilt)
    if callable(getattr(subject, "probe", None)):
        _check_probe(subject, system, rebuilt, state, verbose=verbose)
    return RoundTrip(state, kept, rebuilt)


def _check_structure(system: Any, rebuilt: Any) -> None:
    """Equal exports, yet another system: a deque without its maxlen, a tensor on another
    dtype or device, a module left in eval mode (`checks.live_structure`)."""
    differences = structure_differences(describe_structure(system), describe_structure(rebuilt))
    if differences:
        raise RoundTripMismatch(
            f"the system rebuilt from the checkpoint exports the same state but is built "
            f"differently: {len(differences)} difference(s) (live != rebuilt):",
            items=[str(d) for d in differences],
        )


def _check_probe(
    subject: Subject, system: Any, rebuilt: Any, state: Mapping[str, Any], *, verbose: bool
) -> None:
    expected = call_subject(subject, "probe", system)
    differences = diff_values(expected, call_subject(subject, "probe", rebuilt), root="probe")
    if differences:
        suspects = diagnose_rebuild(state, capture(system), capture(rebuilt))
        raise _mismatch(
            RoundTripMismatch,
            differences,
            "the rebuilt system's output on the probe batch differs from the live one's, "
            "although their exported states are equal: the checkpoint leaves out something "
            "the output depends on (weights dropped by load_state_dict(strict=False), a "
            "module rebuilt differently, a buffer or attribute export_state() does not hold)",
            suspects,
            verbose=verbose,
        )


def normalize_telemetry(value: Any) -> Any:
    """Replace wall-clock fields (keys named like `timestamp` or ending in `_at`) so runs that
    differ only in when they ran compare equal."""
    if isinstance(value, Mapping):
        return {
            key: WALL_CLOCK_PLACEHOLDER if _is_wall_clock(key) else normalize_telemetry(v)
            for key, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [normalize_telemetry(v) for v in value]
    return value


def _is_wall_clock(key: Any) -> bool:
    return isinstance(key, str) and (key in WALL_CLOCK_KEYS or key.endswith("_at"))


def _steps_record(results: Sequence[StepResult]) -> list[dict[str, Any]]:
    records = []
    for r in results:
        record = {"metrics": dict(r.metrics), "telemetry": normalize_telemetry(list(r.telemetry))}
        samples = getattr(r, "samples", None)
        if samples is not None:
            record["samples"] = list(samples)
        records.append(record)
    return records


def _without_samples(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in record.items() if k != "samples"} for record in records]


def _run(subject: Subject, system: Any, steps: int) -> list[StepResult]:
    return [call_subject(subject, "step", system) for _ in range(steps)]


def check_resume(
    subject: Subject,
    system: Any,
    steps: int,
    path: str | os.PathLike[str],
    *,
    tolerance: ResumeTolerance | None = None,
    verbose: bool = False,
) -> list[dict[str, Any]]:
    """Continue `steps` steps vs save -> load -> rebuild -> resume `steps` steps: the samples
    read (`StepResult.samples`), the metrics, telemetry and final state must be equal.
    Returns the continued run's step records.

    The samples are compared first and said first: a data position the checkpoint lost
    rarely shows in the metrics. With a `tolerance` profile (`checks.tolerance`), the
    uninterrupted path also runs on a copy of the system to measure the noise floor, the
    state before the first resumed step must equal the exported one exactly, and floats are
    then compared within the profile's bounds.

    The live state (generators, global RNGs, buffers, attributes, optimizer and scheduler
    state) is captured at the start and the end of the continued and of the resumed run, so
    that a mismatch names its cause first (`checks.diagnose`): state read before it is
    written ranks before state the step only overwrote (equal in both runs at the end).
    The first few causes and effects are shown, all of them when `verbose` (pytest's -v).
    """
    exported = call_subject(subject, "export_state", system)
    loaded = save_and_load(exported, path)
    twin = copy_system(subject, system) if tolerance is not None else None
    before = capture(system)
    continued_results = _run(subject, system, steps)
    after = capture(system)
    warn_unread_generators(exported, before, after, steps)
    continued, continued_state = _steps_record(continued_results), export(subject, system)
    if twin is not None:
        twin_records, twin_state = _rerun(subject, twin, steps, before.rngs)
    resumed_system = call_subject(subject, "rebuild", loaded)
    resumed_start = capture(resumed_system)
    if tolerance is not None:
        _check_state_before_resuming(loaded, export(subject, resumed_system))
    resumed_results = _run(subject, resumed_system, steps)
    resumed_end = capture(resumed_system)
    resumed, resumed_state = _steps_record(resumed_results), export(subject, resumed_system)
    order = sample_order_difference(
        steps_samples(continued_results),
        steps_samples(resumed_results),
        steps,
        getattr(subject, "data_order_fix", None),
    )
    # the samples are said by `order`, in their own words: not again as record differences
    continued_metrics, resumed = _without_samples(continued), _without_samples(resumed)
    if tolerance is None:
        differences = diff_values(continued_metrics, resumed, root="steps")
        differences += diff_values(continued_state, resumed_state, root="state")
    else:
        differences = tolerant_differences(
            continued_metrics, _without_samples(twin_records), resumed, tolerance, root="steps"
        )
        differences += tolerant_differences(
            continued_state, twin_state, resumed_state, tolerance, root="state"
        )
    if differences or order:
        causes = diagnose_resume(exported, before, after, resumed_start, resumed_end)
        within = "" if tolerance is None else f" beyond the {tolerance.describe()} tolerance"
        header = (
            f"resuming from the checkpoint differs from continuing after {steps} step(s){within}:"
            if differences
            else "(the metrics and the final state are equal: they do not show it)"
        )
        causes = [order, *causes] if order else causes
        raise _mismatch(ResumeMismatch, differences, header, causes, verbose=verbose)
    return continued


def export(subject: Subject, system: Any) -> Any:
    return call_subject(subject, "export_state", system)


def copy_system(subject: Subject, system: Any) -> Any:
    """A second live system at the same point, for the second uninterrupted run: the
    subject's `copy_system(system)` if it has one, else `copy.deepcopy(system)`."""
    import copy

    if callable(getattr(subject, "copy_system", None)):
        return call_subject(subject, "copy_system", system)
    try:
        return copy.deepcopy(system)
    except Exception as err:  # anything a live object's __deepcopy__ raises
        raise SubjectError(
            f"a resume tolerance profile runs the uninterrupted path twice, from a copy of the "
            f"system, but copy.deepcopy(system) failed ({type(err).__name__}: {err}): give "
            f"subject {subject.name} a copy_system(system) method"
        ) from None


def _rerun(
    subject: Subject, twin: Any, steps: int, rngs: dict[str, Any]
) -> tuple[list[dict[str, Any]], Any]:
    """The second uninterrupted run, from the global RNG states the first one started from;
    the global RNGs are left as the first run left them."""
    left = global_rng_states()
    set_global_rng_states(rngs)
    try:
        records = _steps_record(_run(subject, twin, steps))
        return records, export(subject, twin)
    finally:
        set_global_rng_states(left)


def _check_state_before_resuming(loaded: Any, resumed_start: Any) -> None:
    """Exact under every profile: a save and a load are never noisy. Compared with what was
    loaded (the live export shares the live tensors, which the continued run has stepped)."""
    differences = diff_values(loaded, resumed_start, root="state")
    if differences:
        raise _mismatch(
            ResumeMismatch,
            differences,
            "the state before the first resumed step differs from the saved one (exact "
            "under every tolerance profile: a save and a load are never noisy):",
        )


def snapshot_record(subject: Subject, system: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a reviewed snapshot holds: the state as loaded back (before anything stepped), and
    one step after resuming."""
    roundtrip = check_roundtrip(subject, system, path, keep_loaded=True)
    step = call_subject(subject, "step", roundtrip.rebuilt)
    return {
        "subject": subject.name,
        "state": roundtrip.loaded,
        "step": {"metrics": dict(step.metrics), "telemetry": normalize_telemetry(step.telemetry)},
    }
