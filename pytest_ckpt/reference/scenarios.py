"""Build a reference model and drive every slot to a chosen seed stage, deterministically.

This is how tests, the demo and (later) the plugin obtain "a live system at stage X": real
germination, real SGD epochs on a synthetic task, real blending. The global torch RNG is
forked and seeded for the duration, so the caller's RNG is left as it was.
"""

from __future__ import annotations

import torch

from pytest_ckpt.reference.blending import BLEND_ALGORITHMS, BlendConfig
from pytest_ckpt.reference.blueprints import blueprint_names
from pytest_ckpt.reference.clock import Clock, ManualClock
from pytest_ckpt.reference.hosts import HOSTS
from pytest_ckpt.reference.lifecycle import SeedStage
from pytest_ckpt.reference.model import MorphogeneticModel
from pytest_ckpt.reference.slots import SlotConfig, parse_grid
from pytest_ckpt.reference.tasks import SyntheticTask

BLEND_EPOCHS = 2
STEPS_PER_EPOCH = 2
LEARNING_RATE = 0.05


def train_epoch(
    model: MorphogeneticModel,
    task: SyntheticTask,
    generator: torch.Generator,
    *,
    steps: int = STEPS_PER_EPOCH,
    lr: float = LEARNING_RATE,
) -> None:
    """A few plain-SGD steps on everything that exists now, then close the epoch."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_value, accuracy = 0.0, 0.0
    for _ in range(steps):
        batch = task.batch(generator)
        optimizer.zero_grad(set_to_none=True)
        loss, accuracy = task.loss_and_accuracy(model(batch.inputs), batch.targets)
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())
        for slot in model.slots_by_id().values():
            if slot.seed is not None and slot.state is not None:
                grads = [p.grad for p in slot.parameters() if p.grad is not None]
                norm = float(torch.stack([g.norm() for g in grads]).norm()) if grads else 0.0
                slot.state.metrics.record_step(loss_value, accuracy, norm)
    model.step_epoch(loss=round(loss_value, 6), accuracy=round(accuracy, 4))


def build_reference_model(
    host_kind: str, grid: str | SlotConfig, *, seed: int = 0, clock: Clock | None = None
) -> MorphogeneticModel:
    if host_kind not in HOSTS:
        raise ValueError(f"unknown host {host_kind!r}; expected one of {', '.join(HOSTS)}")
    slots = grid if isinstance(grid, SlotConfig) else SlotConfig.grid(*parse_grid(grid))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MorphogeneticModel(HOSTS[host_kind](), slots, clock=clock or ManualClock())


def drive_to_stage(
    model: MorphogeneticModel, stage: SeedStage, *, seed: int = 0, blend_epochs: int = BLEND_EPOCHS
) -> None:
    """Walk every slot of `model` (fresh, all DORMANT) to `stage`, training along the way.

    Slots cycle through the blueprints of their layout and through the blend algorithms
    (gated first), so a grid at BLENDING holds a gate. PRUNED seeds are pruned from TRAINING.
    """
    if any(s is not SeedStage.DORMANT for s in model.stages().values()):
        raise ValueError("drive_to_stage needs a fresh model with every slot DORMANT")
    task = SyntheticTask(model.host)
    generator = torch.Generator().manual_seed(seed)
    slot_ids = list(model.seed_slots)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        train_epoch(model, task, generator)
        if stage is SeedStage.DORMANT:
            return
        for i, slot_id in enumerate(slot_ids):
            layout = model.slot(slot_id).point.layout
            names = blueprint_names(layout)
            algorithm = BLEND_ALGORITHMS[(i + 2) % len(BLEND_ALGORITHMS)]  # gated first
            model.germinate(slot_id, names[i % len(names)], BlendConfig(algorithm, blend_epochs))
        train_epoch(model, task, generator)
        if stage is SeedStage.GERMINATED:
            return
        for slot_id in slot_ids:
            model.advance_stage(slot_id)
        train_epoch(model, task, generator)
        if stage is SeedStage.TRAINING:
            return
        if stage is SeedStage.PRUNED:
            for slot_id in slot_ids:
                model.prune(slot_id)
            train_epoch(model, task, generator)
            return
        for slot_id in slot_ids:
            model.advance_stage(slot_id)
        train_epoch(model, task, generator)  # half-way through the blend
        if stage is SeedStage.BLENDING:
            return
        while any(s is SeedStage.BLENDING for s in model.stages().values()):
            train_epoch(model, task, generator)
        if stage is SeedStage.PROBATIONARY:
            return
        for slot_id in slot_ids:
            model.advance_stage(slot_id)
        train_epoch(model, task, generator)


def build_at_stage(
    host_kind: str,
    grid: str | SlotConfig,
    stage: SeedStage,
    *,
    seed: int = 0,
    blend_epochs: int = BLEND_EPOCHS,
) -> MorphogeneticModel:
    """A reference model with every slot at `stage`, identical for identical arguments."""
    model = build_reference_model(host_kind, grid, seed=seed)
    drive_to_stage(model, stage, seed=seed, blend_epochs=blend_epochs)
    return model
