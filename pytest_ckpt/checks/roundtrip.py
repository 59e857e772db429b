"""The checks themselves: save -> load(weights_only=True) -> rebuild -> compare, and resume.

No pytest here: these functions raise `CheckpointError`s whose messages say what failed and
where, and the plugin turns them into test failures. Every load goes through
`checks.loading.save_and_load`: `torch.load(weights_only=True)` with no allowlist, a refusal
explained by path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_ckpt.checks.compare import Difference, diff_values
from pytest_ckpt.checks.loading import save_and_load
from pytest_ckpt.errors import ResumeMismatch, RoundTripMismatch
from pytest_ckpt.subject import StepResult, Subject

WALL_CLOCK_KEYS = ("timestamp", "time", "created", "wall_time")
WALL_CLOCK_PLACEHOLDER = "<wall-clock>"
_SHOWN = 5


def _format(differences: list[Difference], header: str) -> str:
    lines = [header] + [f"  {d}" for d in differences[:_SHOWN]]
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
    """Export, save, load with weights_only=True, compare exactly, rebuild, compare again.

    With `keep_loaded`, `RoundTrip.loaded` is a copy taken before the rebuild: a rebuilt
    optimizer shares the loaded tensors (`load_state_dict` keeps them), so stepping the rebuilt
    system would otherwise change what `loaded` shows.
    """
    import copy

    state = subject.export_state(system)
    loaded = save_and_load(state, path)
    differences = diff_values(state, loaded)
    if differences:
        raise RoundTripMismatch(_format(differences, "state changed through save/load:"))
    kept = copy.deepcopy(loaded) if keep_loaded else loaded
    rebuilt = subject.rebuild(loaded)
    differences = diff_values(state, subject.export_state(rebuilt))
    if differences:
        raise RoundTripMismatch(
            _format(differences, "the system rebuilt from the checkpoint exports another state:")
        )
    return RoundTrip(state, kept, rebuilt)


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
    telemetry and final state must be equal. Returns the continued run's step records."""
    loaded = save_and_load(subject.export_state(system), path)
    continued = _steps_record([subject.step(system) for _ in range(steps)])
    continued_state = subject.export_state(system)
    resumed_system = subject.rebuild(loaded)
    resumed = _steps_record([subject.step(resumed_system) for _ in range(steps)])
    differences = diff_values(continued, resumed, root="steps")
    differences += diff_values(continued_state, subject.export_state(resumed_system), root="state")
    if differences:
        raise ResumeMismatch(
            _format(
                differences,
                f"resuming from the checkpoint differs from continuing after {steps} step(s):",
            )
        )
    return continued


def snapshot_record(subject: Subject, system: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a reviewed snapshot holds: the state as loaded back (before anything stepped), and
    one step after resuming."""
    roundtrip = check_roundtrip(subject, system, path, keep_loaded=True)
    step = subject.step(roundtrip.rebuilt)
    return {
        "subject": subject.name,
        "state": roundtrip.loaded,
        "step": {"metrics": dict(step.metrics), "telemetry": normalize_telemetry(step.telemetry)},
    }
