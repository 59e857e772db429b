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
from pytest_ckpt.checks.hidden_state import capture
from pytest_ckpt.checks.live_structure import describe_structure, structure_differences
from pytest_ckpt.checks.loading import save_and_load
from pytest_ckpt.errors import ResumeMismatch, RoundTripMismatch
from pytest_ckpt.subject import StepResult, Subject

WALL_CLOCK_KEYS = ("timestamp", "time", "created", "wall_time")
WALL_CLOCK_PLACEHOLDER = "<wall-clock>"
_SHOWN = 5


def _format(differences: list[Difference], header: str, causes: Sequence[str] = ()) -> str:
    """The causes first (the first one on the message's first line), then the effects."""
    lines = [causes[0]] if causes else []
    lines += [f"  and: {cause}" for cause in causes[1:_SHOWN]]
    if len(causes) > _SHOWN:
        lines.append(f"  ... and {len(causes) - _SHOWN} more differences in the live state")
    lines.append(header)
    lines += [f"  {d}" for d in differences[:_SHOWN]]
    if len(differences) > _SHOWN:
        lines.append(f"  ... and more (first {_SHOWN} shown)")
    return "\n".join(lines)


@dataclass(slots=True, frozen=True)
class RoundTrip:
    state: Mapping[str, Any]  # what the live system exported
    loaded: Any  # what torch.load(weights_only=True) gave back
    rebuilt: Any  # a fresh system rebuilt from `loaded`


def check_roundtrip(
    subject: Subject, system: Any, path: str | os.PathLike[str], *, keep_loaded: bool = False
) -> RoundTrip:
    """Export, save, load with weights_only=True, compare exactly, rebuild, compare again,
    compare the live and the rebuilt system's structure; if the subject has a forward `probe`,
    the live and the rebuilt system's outputs must be equal.

    With `keep_loaded`, `RoundTrip.loaded` is a copy taken before the rebuild: a rebuilt
    optimizer shares the loaded tensors (`load_state_dict` keeps them), so stepping the rebuilt
    system would otherwise change what `loaded` shows.
    """
    import copy

    state = call_subject(subject, "export_state", system)
    loaded = save_and_load(state, path)
    differences = diff_values(state, loaded)
    if differences:
        raise RoundTripMismatch(_format(differences, "state changed through save/load:"))
    kept = copy.deepcopy(loaded) if keep_loaded else loaded
    rebuilt = call_subject(subject, "rebuild", loaded)
    differences = diff_values(state, call_subject(subject, "export_state", rebuilt))
    if differences:
        raise RoundTripMismatch(
            _format(differences, "the system rebuilt from the checkpoint exports another state:")
        )
    _check_structure(system, rebuilt)
    if callable(getattr(subject, "probe", None)):
        _check_probe(subject, system, rebuilt, state)
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


def _check_probe(subject: Subject, system: Any, rebuilt: Any, state: Mapping[str, Any]) -> None:
    expected = call_subject(subject, "probe", system)
    differences = diff_values(expected, call_subject(subject, "probe", rebuilt), root="probe")
    if differences:
        suspects = diagnose_rebuild(state, capture(system), capture(rebuilt))
        raise RoundTripMismatch(
            _format(
                differences,
                "the rebuilt system's output on the probe batch differs from the live one's, "
                "although their exported states are equal: the checkpoint leaves out something "
                "the output depends on (weights dropped by load_state_dict(strict=False), a "
                "module rebuilt differently, a buffer or attribute export_state() does not hold)",
                suspects,
            )
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
    return [
        {"metrics": dict(r.metrics), "telemetry": normalize_telemetry(list(r.telemetry))}
        for r in results
    ]


def check_resume(
    subject: Subject, system: Any, steps: int, path: str | os.PathLike[str]
) -> list[dict[str, Any]]:
    """Continue `steps` steps vs save -> load -> rebuild -> resume `steps` steps: the metrics,
    telemetry and final state must be equal. Returns the continued run's step records.

    The live state (generators, global RNGs, buffers, attributes, optimizer and scheduler
    state) is captured at the start of the continued run, after it, and at the start of the
    resumed run, so that a mismatch names its cause first (`checks.diagnose`).
    """
    exported = call_subject(subject, "export_state", system)
    loaded = save_and_load(exported, path)
    before = capture(system)
    continued = _steps_record([call_subject(subject, "step", system) for _ in range(steps)])
    after = capture(system)
    continued_state = call_subject(subject, "export_state", system)
    resumed_system = call_subject(subject, "rebuild", loaded)
    resumed_start = capture(resumed_system)
    resumed = _steps_record([call_subject(subject, "step", resumed_system) for _ in range(steps)])
    differences = diff_values(continued, resumed, root="steps")
    differences += diff_values(
        continued_state, call_subject(subject, "export_state", resumed_system), root="state"
    )
    if differences:
        raise ResumeMismatch(
            _format(
                differences,
                f"resuming from the checkpoint differs from continuing after {steps} step(s):",
                diagnose_resume(exported, before, after, resumed_start),
            )
        )
    return continued


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
