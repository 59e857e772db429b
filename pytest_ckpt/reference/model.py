"""`MorphogeneticModel`: a host with a grid of seed slots, and its checkpoint format.

A checkpoint is `{"schema_version", "config", "state_dict"}`. `config()` describes everything
needed to rebuild the same structure (host kind and sizes, the slot grid, every slot's seed
and blend, DORMANT and PRUNED ones included), so `from_config(cfg)` followed by a strict
`load_state_dict` restores the model at any stage. Everything in it is primitives or tensors:
`torch.load(weights_only=True)` accepts it with no allowlist.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from pytest_ckpt.reference.blending import BlendConfig
from pytest_ckpt.reference.clock import Clock, wall_clock
from pytest_ckpt.reference.fields import read_fields
from pytest_ckpt.reference.hosts import SegmentedHost, build_host
from pytest_ckpt.reference.lifecycle import SeedStage
from pytest_ckpt.reference.slot import SeedSlot, StageTransition
from pytest_ckpt.reference.slots import SlotConfig
from pytest_ckpt.reference.telemetry import TelemetryEventType, TelemetryRecorder

MODEL_SCHEMA_VERSION = 1
CHECKPOINT_SCHEMA_VERSION = 1

_STAGE_EVENTS = {
    SeedStage.GERMINATED: TelemetryEventType.SEED_GERMINATED,
    SeedStage.FOSSILIZED: TelemetryEventType.SEED_FOSSILIZED,
    SeedStage.PRUNED: TelemetryEventType.SEED_PRUNED,
}


class MorphogeneticModel(nn.Module):
    """A host network whose slots grow, blend in, keep or drop seeds while it trains."""

    def __init__(
        self,
        host: SegmentedHost,
        slots: SlotConfig,
        *,
        clock: Clock = wall_clock,
        telemetry: TelemetryRecorder | None = None,
    ) -> None:
        super().__init__()
        self.host = host
        self.slots = slots
        self.telemetry = telemetry if telemetry is not None else TelemetryRecorder(clock)
        self.seed_slots = nn.ModuleDict(
            {
                slot_id: SeedSlot(slot_id, host.injection_point(slot_id), clock)
                for slot_id in host.slot_order(slots)
            }
        )
        self.epochs_completed = 0

    # ---- structure -------------------------------------------------------------------------

    def slot(self, slot_id: str) -> SeedSlot:
        self.slots.index_of(slot_id)  # canonical and present, or a ValueError that says so
        return self.slots_by_id()[slot_id]

    def slots_by_id(self) -> dict[str, SeedSlot]:
        """`seed_slots` with its values typed (a ModuleDict's are `nn.Module`)."""
        found = dict(self.seed_slots.items())
        slots = {slot_id: slot for slot_id, slot in found.items() if isinstance(slot, SeedSlot)}
        if len(slots) != len(found):
            raise TypeError("MorphogeneticModel.seed_slots holds a module that is not a SeedSlot")
        return slots

    def stages(self) -> dict[str, SeedStage]:
        return {slot_id: slot.stage for slot_id, slot in self.slots_by_id().items()}

    def host_parameters(self) -> Iterator[nn.Parameter]:
        return self.host.parameters()

    def seed_parameters(self, slot_id: str | None = None) -> Iterator[nn.Parameter]:
        slots = self.slots_by_id().values() if slot_id is None else [self.slot(slot_id)]
        for slot in slots:
            yield from slot.parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor | None = None
        previous: str | None = None
        for row in self.slots.rows:
            row_slots = self.slots.slots_in_row(row)
            anchor = row_slots[0]
            if previous is None or h is None:
                h = self.host.forward_to(x, anchor)
            else:
                h = self.host.forward_between(h, previous, anchor)
            deltas = [self.seed_slots[slot_id](h) for slot_id in row_slots]
            for delta in deltas:
                if delta is not None:
                    h = h + delta
            previous = anchor
        assert h is not None and previous is not None
        return self.host.forward_from(h, previous)

    # ---- lifecycle (every change is emitted as telemetry) ----------------------------------

    def germinate(self, slot_id: str, blueprint: str, blend: BlendConfig) -> StageTransition:
        return self._emit(self.slot(slot_id).germinate(blueprint, blend))

    def advance_stage(self, slot_id: str) -> StageTransition:
        return self._emit(self.slot(slot_id).advance_stage())

    def prune(self, slot_id: str) -> StageTransition:
        return self._emit(self.slot(slot_id).prune())

    def step_epoch(self, **summary: Any) -> list[StageTransition]:
        """Close an epoch: every slot counts it (finishing blends), then EPOCH_COMPLETED."""
        transitions: list[StageTransition] = []
        for slot in self.slots_by_id().values():
            transitions.extend(self._emit(t) for t in slot.step_epoch())
        self.epochs_completed += 1
        self.telemetry.emit(
            TelemetryEventType.EPOCH_COMPLETED,
            epoch=self.epochs_completed,
            stages={slot_id: stage.name for slot_id, stage in self.stages().items()},
            **summary,
        )
        return transitions

    def _emit(self, transition: StageTransition) -> StageTransition:
        payload = {
            "seed_id": transition.seed_id,
            "from_stage": transition.from_stage.name,
            "to_stage": transition.to_stage.name,
        }
        self.telemetry.emit(
            TelemetryEventType.SEED_STAGE_CHANGED, slot_id=transition.slot_id, **payload
        )
        special = _STAGE_EVENTS.get(transition.to_stage)
        if special is not None:
            self.telemetry.emit(special, slot_id=transition.slot_id, **payload)
        return transition

    # ---- checkpoint ------------------------------------------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        return {"schema_version": MODEL_SCHEMA_VERSION, "epochs_completed": self.epochs_completed}

    def set_extra_state(self, state: Any) -> None:
        fields = read_fields(
            state,
            {"epochs_completed": int},
            where="MorphogeneticModel extra_state",
            version=MODEL_SCHEMA_VERSION,
        )
        self.epochs_completed = fields["epochs_completed"]

    def config(self) -> dict[str, Any]:
        """Primitives that rebuild this exact structure (weights come from the state_dict)."""
        return {
            "schema_version": MODEL_SCHEMA_VERSION,
            "host": self.host.config(),
            "slots": self.slots.to_dict(),
            "seed_slots": {
                slot_id: slot.get_extra_state() for slot_id, slot in self.seed_slots.items()
            },
        }

    @classmethod
    def from_config(
        cls,
        config: Any,
        *,
        clock: Clock = wall_clock,
        telemetry: TelemetryRecorder | None = None,
    ) -> MorphogeneticModel:
        fields = read_fields(
            config,
            {"host": Mapping, "slots": Mapping, "seed_slots": Mapping},
            where="MorphogeneticModel config",
            version=MODEL_SCHEMA_VERSION,
        )
        model = cls(
            build_host(fields["host"]),
            SlotConfig.from_dict(fields["slots"]),
            clock=clock,
            telemetry=telemetry,
        )
        described = set(fields["seed_slots"])
        expected = set(model.seed_slots)
        if described != expected:
            raise ValueError(
                f"MorphogeneticModel config: seed_slots describes {sorted(described)} but the "
                f"slot grid has {sorted(expected)}"
            )
        for slot_id, slot in model.slots_by_id().items():
            slot.restore(fields["seed_slots"][slot_id], rebuild=True)
        return model

    def checkpoint(self) -> dict[str, Any]:
        return {
            "schema_version": CHECKPOINT_SCHEMA_VERSION,
            "config": self.config(),
            "state_dict": self.state_dict(),
        }

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: Any,
        *,
        clock: Clock = wall_clock,
        telemetry: TelemetryRecorder | None = None,
    ) -> MorphogeneticModel:
        """Rebuild from `config`, then a strict load: any missing or unexpected key is an error."""
        fields = read_fields(
            checkpoint,
            {"config": Mapping, "state_dict": Mapping},
            where="model checkpoint",
            version=CHECKPOINT_SCHEMA_VERSION,
        )
        model = cls.from_config(fields["config"], clock=clock, telemetry=telemetry)
        try:
            model.load_state_dict(fields["state_dict"], strict=True)
        except RuntimeError as err:
            detail = " ".join(str(err).split())  # torch's message spans lines; keep it to one
            raise ValueError(
                f"model checkpoint: state_dict does not fit its config: {detail}"
            ) from err
        return model


def save_model(model: MorphogeneticModel, path: str | os.PathLike[str]) -> None:
    torch.save(model.checkpoint(), path)


def load_model(
    path: str | os.PathLike[str],
    *,
    clock: Clock = wall_clock,
    telemetry: TelemetryRecorder | None = None,
) -> MorphogeneticModel:
    """Load with `weights_only=True` (no allowlist) and rebuild on the CPU."""
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    return MorphogeneticModel.from_checkpoint(checkpoint, clock=clock, telemetry=telemetry)
