"""The seed lifecycle: stages, the one transition table, and the seed's checkpointable state.

A seed is born GERMINATED in a DORMANT slot, trains in isolation, blends into the host,
serves a probation and is then FOSSILIZED (kept for good) or PRUNED (removed). `SeedState`
is what a checkpoint stores about it: stages travel as their names, time as float
timestamps from an injected clock, history as `[stage_name, timestamp]` pairs. No enum,
datetime, deque or dataclass object ever reaches a checkpoint.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_ckpt.reference.fields import check_field, read_fields
from pytest_ckpt.vocabulary import MAIN_LINE as VOCABULARY_MAIN_LINE
from pytest_ckpt.vocabulary import STAGE_TRANSITIONS, validate_slot_id

SEED_STATE_SCHEMA_VERSION = 1


class SeedStage(enum.IntEnum):
    """Lifecycle stages. DORMANT is 0 on purpose: `if stage:` is a bug, use `is not None`."""

    DORMANT = 0
    GERMINATED = 1
    TRAINING = 2
    BLENDING = 3
    PROBATIONARY = 4
    FOSSILIZED = 5
    PRUNED = 6

    @classmethod
    def from_name(cls, name: Any, *, where: str = "SeedStage") -> SeedStage:
        if not isinstance(name, str) or name not in cls.__members__:
            valid = ", ".join(cls.__members__)
            raise ValueError(f"{where}: unknown seed stage {name!r}; expected one of {valid}")
        return cls[name]


LIVE_STAGES = frozenset(
    {SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.PROBATIONARY}
)
TERMINAL_STAGES = frozenset({SeedStage.FOSSILIZED, SeedStage.PRUNED})

# The one transition table (`pytest_ckpt.vocabulary`), as stages.
TRANSITIONS: Mapping[SeedStage, frozenset[SeedStage]] = {
    SeedStage[name]: frozenset(SeedStage[target] for target in targets)
    for name, targets in STAGE_TRANSITIONS.items()
}

# The main line a seed walks when it is not pruned; `advance_stage` follows it.
MAIN_LINE: tuple[SeedStage, ...] = tuple(SeedStage[name] for name in VOCABULARY_MAIN_LINE)


def allowed_next_stages(stage: SeedStage) -> tuple[SeedStage, ...]:
    return tuple(sorted(TRANSITIONS[stage]))


def check_transition(current: SeedStage, target: SeedStage) -> None:
    """Raise ValueError naming both stages and the allowed next ones if the move is illegal."""
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(s.name for s in allowed_next_stages(current)) or "none (terminal)"
        raise ValueError(
            f"illegal seed transition {current.name} -> {target.name}; "
            f"allowed from {current.name}: {allowed}"
        )


def next_main_line_stage(stage: SeedStage) -> SeedStage:
    if stage not in MAIN_LINE or stage is MAIN_LINE[-1]:
        raise ValueError(f"a seed at {stage.name} has no next stage to advance to")
    return MAIN_LINE[MAIN_LINE.index(stage) + 1]


@dataclass(slots=True)
class SeedMetrics:
    """Training signals of one seed. Every field is a plain number or None."""

    train_steps: int = 0
    last_loss: float | None = None
    best_loss: float | None = None
    last_accuracy: float | None = None
    grad_norm: float | None = None

    def record_step(self, loss: float, accuracy: float | None, grad_norm: float | None) -> None:
        self.train_steps += 1
        self.last_loss = loss
        self.best_loss = loss if self.best_loss is None else min(self.best_loss, loss)
        self.last_accuracy = accuracy
        self.grad_norm = grad_norm

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SEED_STATE_SCHEMA_VERSION,
            "train_steps": self.train_steps,
            "last_loss": self.last_loss,
            "best_loss": self.best_loss,
            "last_accuracy": self.last_accuracy,
            "grad_norm": self.grad_norm,
        }

    @classmethod
    def from_dict(cls, data: Any) -> SeedMetrics:
        optional_float = (float, type(None))
        fields = read_fields(
            data,
            {
                "train_steps": int,
                "last_loss": optional_float,
                "best_loss": optional_float,
                "last_accuracy": optional_float,
                "grad_norm": optional_float,
            },
            where="SeedMetrics",
            version=SEED_STATE_SCHEMA_VERSION,
        )
        if fields["train_steps"] < 0:
            raise ValueError("SeedMetrics: field 'train_steps' must be >= 0")
        return cls(**fields)


@dataclass(slots=True)
class SeedState:
    """Everything a checkpoint must know about one seed to rebuild and resume it."""

    seed_id: str
    slot_id: str
    blueprint: str
    stage: SeedStage
    previous_stage: SeedStage | None
    stage_entered_at: float
    stage_history: list[tuple[SeedStage, float]]
    epochs_in_stage: int
    epochs_total: int
    alpha: float
    isolate_gradients: bool
    metrics: SeedMetrics = field(default_factory=SeedMetrics)

    @classmethod
    def new(cls, *, seed_id: str, slot_id: str, blueprint: str, now: float) -> SeedState:
        """A seed that exists but has not left DORMANT; `enter(GERMINATED)` is its birth."""
        validate_slot_id(slot_id)
        return cls(
            seed_id=seed_id,
            slot_id=slot_id,
            blueprint=blueprint,
            stage=SeedStage.DORMANT,
            previous_stage=None,
            stage_entered_at=now,
            stage_history=[(SeedStage.DORMANT, now)],
            epochs_in_stage=0,
            epochs_total=0,
            alpha=0.0,
            isolate_gradients=True,
        )

    def enter(self, target: SeedStage, now: float) -> None:
        """Move to `target` (checked against TRANSITIONS) and record it in the history."""
        check_transition(self.stage, target)
        self.previous_stage = self.stage
        self.stage = target
        self.stage_entered_at = now
        self.stage_history.append((target, now))
        self.epochs_in_stage = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SEED_STATE_SCHEMA_VERSION,
            "seed_id": self.seed_id,
            "slot_id": self.slot_id,
            "blueprint": self.blueprint,
            "stage": self.stage.name,
            "previous_stage": None if self.previous_stage is None else self.previous_stage.name,
            "stage_entered_at": self.stage_entered_at,
            "stage_history": [[stage.name, at] for stage, at in self.stage_history],
            "epochs_in_stage": self.epochs_in_stage,
            "epochs_total": self.epochs_total,
            "alpha": self.alpha,
            "isolate_gradients": self.isolate_gradients,
            "metrics": self.metrics.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> SeedState:
        where = "SeedState"
        fields = read_fields(
            data,
            {
                "seed_id": str,
                "slot_id": str,
                "blueprint": str,
                "stage": str,
                "previous_stage": (str, type(None)),
                "stage_entered_at": float,
                "stage_history": (list, tuple),
                "epochs_in_stage": int,
                "epochs_total": int,
                "alpha": float,
                "isolate_gradients": bool,
                "metrics": Mapping,
            },
            where=where,
            version=SEED_STATE_SCHEMA_VERSION,
        )
        try:
            validate_slot_id(fields["slot_id"])
        except ValueError as err:
            raise ValueError(f"{where}: field 'slot_id': {err}") from None
        stage = SeedStage.from_name(fields["stage"], where=f"{where}.stage")
        previous = fields["previous_stage"]
        previous_stage = (
            None if previous is None else SeedStage.from_name(previous, where=f"{where}.previous")
        )
        history = [
            _read_history_entry(entry, i, where) for i, entry in enumerate(fields["stage_history"])
        ]
        _check_history(history, stage, previous_stage, where)
        for name in ("epochs_in_stage", "epochs_total"):
            if fields[name] < 0:
                raise ValueError(f"{where}: field {name!r} must be >= 0, got {fields[name]}")
        if not 0.0 <= fields["alpha"] <= 1.0:
            raise ValueError(f"{where}: field 'alpha' must be in [0, 1], got {fields['alpha']}")
        return cls(
            seed_id=fields["seed_id"],
            slot_id=fields["slot_id"],
            blueprint=fields["blueprint"],
            stage=stage,
            previous_stage=previous_stage,
            stage_entered_at=fields["stage_entered_at"],
            stage_history=history,
            epochs_in_stage=fields["epochs_in_stage"],
            epochs_total=fields["epochs_total"],
            alpha=fields["alpha"],
            isolate_gradients=fields["isolate_gradients"],
            metrics=SeedMetrics.from_dict(fields["metrics"]),
        )


def _read_history_entry(entry: Any, index: int, where: str) -> tuple[SeedStage, float]:
    name = f"stage_history[{index}]"
    if not isinstance(entry, (list, tuple)) or len(entry) != 2:
        raise ValueError(f"{where}: {name} must be a [stage_name, timestamp] pair, got {entry!r}")
    stage = SeedStage.from_name(entry[0], where=f"{where}.{name}")
    at = check_field(entry[1], float, where=where, name=f"{name}[1]")
    return stage, at


def _check_history(
    history: list[tuple[SeedStage, float]],
    stage: SeedStage,
    previous: SeedStage | None,
    where: str,
) -> None:
    """The history must be a legal walk from DORMANT that ends at `stage`."""
    if not history or history[0][0] is not SeedStage.DORMANT:
        raise ValueError(f"{where}: stage_history must start at DORMANT")
    for (before, _), (after, _) in itertools.pairwise(history):
        try:
            check_transition(before, after)
        except ValueError as err:
            raise ValueError(f"{where}: stage_history is not a legal walk: {err}") from None
    if history[-1][0] is not stage:
        raise ValueError(
            f"{where}: stage is {stage.name} but stage_history ends at {history[-1][0].name}"
        )
    expected_previous = history[-2][0] if len(history) > 1 else None
    if previous is not expected_previous:
        found = None if previous is None else previous.name
        want = None if expected_previous is None else expected_previous.name
        raise ValueError(f"{where}: previous_stage is {found} but stage_history says {want}")
