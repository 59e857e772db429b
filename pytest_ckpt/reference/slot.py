"""`SeedSlot`: one place in the host where a seed can germinate, blend in and stay or go.

The slot's modules (the seed and, while a gated blend runs, its gate) are registered
submodules, so their weights are in the state_dict. Its extra_state is primitives only: the
seed's `SeedState.to_dict()` and the `BlendConfig`. Which modules must exist follows from
(stage, blend) alone (`expected_modules`), and both the live transitions and the loader use
that one rule: a loader that finds the wrong structure says so instead of dropping weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pytest_ckpt.reference.blending import BlendConfig, BlendGate, gated_alpha
from pytest_ckpt.reference.blueprints import build_blueprint
from pytest_ckpt.reference.clock import Clock
from pytest_ckpt.reference.fields import read_fields
from pytest_ckpt.reference.hosts import InjectionPoint
from pytest_ckpt.reference.lifecycle import (
    SeedStage,
    SeedState,
    check_transition,
    next_main_line_stage,
)

SLOT_SCHEMA_VERSION = 1

_STAGES_WITH_SEED_MODULE = frozenset(
    {
        SeedStage.GERMINATED,
        SeedStage.TRAINING,
        SeedStage.BLENDING,
        SeedStage.PROBATIONARY,
        SeedStage.FOSSILIZED,
    }
)


@dataclass(slots=True, frozen=True)
class StageTransition:
    """A stage change that happened, for the caller to log or emit as telemetry."""

    slot_id: str
    seed_id: str
    from_stage: SeedStage
    to_stage: SeedStage
    at: float


def expected_modules(stage: SeedStage, blend: BlendConfig | None) -> tuple[bool, bool]:
    """(has seed module, has blend gate) for a slot whose seed is at `stage`."""
    has_seed = stage in _STAGES_WITH_SEED_MODULE
    has_gate = stage is SeedStage.BLENDING and blend is not None and blend.uses_gate
    return has_seed, has_gate


class SeedSlot(nn.Module):
    """A slot at one injection point. Empty (DORMANT) until a seed germinates in it."""

    def __init__(self, slot_id: str, point: InjectionPoint, clock: Clock) -> None:
        super().__init__()
        self.slot_id = slot_id
        self.point = point
        self._clock = clock
        self.seed: nn.Module | None = None
        self.blend_gate: BlendGate | None = None
        self.state: SeedState | None = None
        self.blend: BlendConfig | None = None
        self.seeds_started = 0

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def stage(self) -> SeedStage:
        return SeedStage.DORMANT if self.state is None else self.state.stage

    def germinate(self, blueprint: str, blend: BlendConfig) -> StageTransition:
        """Plant a new seed. Allowed in an empty slot or one whose last seed was PRUNED."""
        if self.state is not None and self.state.stage is not SeedStage.PRUNED:
            raise ValueError(
                f"slot {self.slot_id} already hosts seed {self.state.seed_id} at "
                f"{self.state.stage.name}; only an empty or pruned slot can germinate"
            )
        build_blueprint(blueprint, width=self.point.width, layout=self.point.layout)  # validate
        self.seeds_started += 1
        self.state = SeedState.new(
            seed_id=f"{self.slot_id}/seed{self.seeds_started}",
            slot_id=self.slot_id,
            blueprint=blueprint,
            now=self._clock(),
        )
        self.blend = blend
        return self._on_enter_stage(SeedStage.GERMINATED)

    def advance_stage(self) -> StageTransition:
        """Move the seed one step along the main line (GERMINATED -> TRAINING -> ...)."""
        state = self._require_seed("advance")
        return self._on_enter_stage(next_main_line_stage(state.stage))

    def prune(self) -> StageTransition:
        self._require_seed("prune")
        return self._on_enter_stage(SeedStage.PRUNED)

    def step_epoch(self) -> list[StageTransition]:
        """One epoch passed: count it, move alpha along the blend, finish a completed blend."""
        if self.state is None or self.state.stage is SeedStage.PRUNED:
            return []
        state = self.state
        state.epochs_in_stage += 1
        state.epochs_total += 1
        if state.stage is SeedStage.BLENDING:
            blend = self._require_blend()
            state.alpha = blend.alpha_at(state.epochs_in_stage)
            if state.epochs_in_stage >= blend.total_epochs:
                return [self._on_enter_stage(SeedStage.PROBATIONARY)]
        return []

    def _on_enter_stage(self, target: SeedStage) -> StageTransition:
        """The single path by which a seed enters a stage, from any caller."""
        state = self._require_seed("change stage")
        check_transition(state.stage, target)
        source = state.stage
        now = self._clock()
        state.enter(target, now)
        if target in (SeedStage.GERMINATED, SeedStage.TRAINING):
            state.alpha, state.isolate_gradients = 0.0, True
        elif target is SeedStage.BLENDING:
            state.alpha, state.isolate_gradients = self._require_blend().alpha_at(0), True
        elif target in (SeedStage.PROBATIONARY, SeedStage.FOSSILIZED):
            state.alpha, state.isolate_gradients = 1.0, False
        elif target is SeedStage.PRUNED:
            state.alpha = 0.0
        self._sync_modules()
        return StageTransition(self.slot_id, state.seed_id, source, target, now)

    def _sync_modules(self) -> None:
        """Create or drop the seed and gate modules so they match (stage, blend)."""
        has_seed, has_gate = expected_modules(self.stage, self.blend)
        if has_seed and self.seed is None:
            assert self.state is not None
            self.seed = build_blueprint(
                self.state.blueprint, width=self.point.width, layout=self.point.layout
            )
        elif not has_seed:
            self.seed = None
        if has_gate and self.blend_gate is None:
            self.blend_gate = BlendGate(self.point.width, self.point.layout)
        elif not has_gate:
            self.blend_gate = None

    def _require_seed(self, action: str) -> SeedState:
        if self.state is None:
            raise ValueError(f"slot {self.slot_id} is DORMANT (no seed): cannot {action}")
        return self.state

    def _require_blend(self) -> BlendConfig:
        if self.blend is None:
            raise ValueError(f"slot {self.slot_id} has a seed but no blend config")
        return self.blend

    # ---- forward ---------------------------------------------------------------------------

    def seed_input(self, h: torch.Tensor) -> torch.Tensor:
        """What the seed sees: detached host activations while gradients are isolated."""
        assert self.state is not None
        return h.detach() if self.state.isolate_gradients else h

    def forward(self, h: torch.Tensor) -> torch.Tensor | None:
        """The delta this slot adds to the host activations `h`, or None when it adds nothing.

        TRAINING uses a straight-through delta `s - s.detach()`: exactly zero in value (the
        host's output is untouched) while the seed still receives the task gradient.
        """
        stage = self.stage
        if self.seed is None or stage in (SeedStage.GERMINATED, SeedStage.PRUNED):
            return None
        assert self.state is not None
        if stage is SeedStage.TRAINING:
            out = self.seed(self.seed_input(h))
            return out - out.detach()
        if stage is SeedStage.BLENDING:
            seen = self.seed_input(h)
            out = self.seed(seen)
            if self.blend_gate is not None:
                return gated_alpha(self.state.alpha, self.blend_gate(seen)) * out
            return self.state.alpha * out
        return self.seed(h)  # PROBATIONARY and FOSSILIZED: alpha is exactly 1.0

    # ---- checkpoint ------------------------------------------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "schema_version": SLOT_SCHEMA_VERSION,
            "slot_id": self.slot_id,
            "seeds_started": self.seeds_started,
            "seed_state": None if self.state is None else self.state.to_dict(),
            "blend": None if self.blend is None else self.blend.to_dict(),
        }

    def set_extra_state(self, state: Any) -> None:
        """Restore from a checkpoint; the module structure must already match (see from_config)."""
        self.restore(state, rebuild=False)

    def restore(self, extra: Any, *, rebuild: bool) -> None:
        """Read `get_extra_state()` output. rebuild=True creates the modules it implies
        (used by `from_config`); rebuild=False demands that they already exist (the loader)."""
        where = f"slot {self.slot_id} extra_state"
        fields = read_fields(
            extra,
            {
                "slot_id": str,
                "seeds_started": int,
                "seed_state": (Mapping, type(None)),
                "blend": (Mapping, type(None)),
            },
            where=where,
            version=SLOT_SCHEMA_VERSION,
        )
        if fields["slot_id"] != self.slot_id:
            raise ValueError(f"{where}: belongs to slot {fields['slot_id']!r}")
        state = None if fields["seed_state"] is None else SeedState.from_dict(fields["seed_state"])
        blend = None if fields["blend"] is None else BlendConfig.from_dict(fields["blend"])
        if (state is None) != (blend is None):
            raise ValueError(f"{where}: seed_state and blend must both be present or both None")
        if state is not None and state.slot_id != self.slot_id:
            raise ValueError(f"{where}: seed_state names slot {state.slot_id!r}")
        if fields["seeds_started"] < (0 if state is None else 1):
            raise ValueError(f"{where}: seeds_started {fields['seeds_started']} is too small")
        if rebuild:
            self.seed, self.blend_gate = None, None
        else:
            self._check_structure(state, blend, where)
        self.state, self.blend, self.seeds_started = state, blend, fields["seeds_started"]
        if rebuild:
            self._sync_modules()

    def _check_structure(
        self, state: SeedState | None, blend: BlendConfig | None, where: str
    ) -> None:
        stage = SeedStage.DORMANT if state is None else state.stage
        wanted = expected_modules(stage, blend)
        present = (self.seed is not None, self.blend_gate is not None)
        same_blueprint = (
            state is None or self.state is None or state.blueprint == self.state.blueprint
        )
        if wanted != present or not same_blueprint:
            held = "no seed" if state is None else f"a {state.blueprint} seed at {stage.name}"
            if blend is not None:
                held += f" ({blend.algorithm} blend)"
            mine = "no seed" if self.state is None else f"a {self.state.blueprint} seed at "
            mine += "" if self.state is None else self.stage.name
            raise ValueError(
                f"{where}: the checkpoint holds {held} but this model's slot has {mine}; "
                f"rebuild with MorphogeneticModel.from_config(checkpoint['config']) before "
                f"load_state_dict"
            )
