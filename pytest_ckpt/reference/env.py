"""The controller's environment: one step is one training epoch of a `MorphogeneticModel`.

The controller acts on the model's slots (germinate, advance, prune, or wait); the model
then trains for an epoch on a synthetic task, and the reward comes from typed inputs
(validation loss change and seed contribution). An episode is `episode_epochs` epochs; then
a fresh model takes over. All randomness comes from the env's own `torch.Generator`: module
initialisation draws a seed from it and runs in a forked global RNG.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch

from pytest_ckpt.reference.blending import BLEND_ALGORITHMS, BlendConfig
from pytest_ckpt.reference.blueprints import blueprint_names
from pytest_ckpt.reference.clock import Clock
from pytest_ckpt.reference.fields import read_fields
from pytest_ckpt.reference.hosts import HOSTS
from pytest_ckpt.reference.lifecycle import LIVE_STAGES, SeedStage
from pytest_ckpt.reference.model import MorphogeneticModel
from pytest_ckpt.reference.ppo import Operation, PPOConfig
from pytest_ckpt.reference.rewards import (
    EPISODE_SUCCESS_THRESHOLD,
    ActionOutcome,
    ActionSpec,
    ContributionRewardInputs,
    LossRewardInputs,
    RewardBreakdown,
    compute_reward,
)
from pytest_ckpt.reference.slots import SlotConfig
from pytest_ckpt.reference.tasks import SyntheticTask
from pytest_ckpt.reference.telemetry import TelemetryRecorder

ENV_SCHEMA_VERSION = 1
_EMPTY = (SeedStage.DORMANT, SeedStage.PRUNED)
_ADVANCEABLE = (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.PROBATIONARY)
_STAGES = list(SeedStage)
PER_SLOT_FEATURES = len(_STAGES) + 2
GLOBAL_FEATURES = 3


@dataclass(slots=True, frozen=True)
class StepResult:
    outcome: ActionOutcome
    reward: RewardBreakdown
    loss: float
    accuracy: float
    episode_ended: bool
    success: bool


class MorphogeneticEnv:
    def __init__(
        self,
        host_kind: str,
        slots: SlotConfig,
        config: PPOConfig,
        *,
        clock: Clock,
        telemetry: TelemetryRecorder,
        seed: int,
        initial_model: MorphogeneticModel | None = None,
    ) -> None:
        if host_kind not in HOSTS:
            raise ValueError(f"unknown host {host_kind!r}; expected one of {', '.join(HOSTS)}")
        self.host_kind, self.slots, self.config = host_kind, slots, config
        self.clock, self.telemetry = clock, telemetry
        self.generator = torch.Generator().manual_seed(seed)
        self.validation_seed = seed + 1
        self.epoch_in_episode = 0
        self.episode_return = 0.0
        self.episodes_completed = 0
        self.episode_successes = 0
        if initial_model is not None:
            if initial_model.slots != slots or initial_model.host.kind != host_kind:
                raise ValueError("initial_model does not match the env's host and slots")
            # A copy bound to this env's clock and recorder: the model's slots stamp stage
            # changes with the clock they were built with, which must be the one we checkpoint.
            self._install(
                MorphogeneticModel.from_checkpoint(
                    initial_model.checkpoint(), clock=clock, telemetry=telemetry
                )
            )
        else:
            self._install(self._fresh_model())
        self.last_loss, self.last_accuracy = self.evaluate()

    # ---- model and optimizers ----------------------------------------------------------------

    def _fresh_model(self) -> MorphogeneticModel:
        with _Forked(self):
            return MorphogeneticModel(
                HOSTS[self.host_kind](), self.slots, clock=self.clock, telemetry=self.telemetry
            )

    def _install(self, model: MorphogeneticModel) -> None:
        self.model = model
        self.task = SyntheticTask(model.host)
        self.validation = self.task.batch(torch.Generator().manual_seed(self.validation_seed))
        self.host_optimizer = torch.optim.Adam(model.host.parameters(), lr=self.config.model_lr)

    # ---- observation and masks -----------------------------------------------------------

    @property
    def obs_dim(self) -> int:
        return GLOBAL_FEATURES + PER_SLOT_FEATURES * self.slots.num_slots

    @property
    def blueprints(self) -> tuple[str, ...]:
        return blueprint_names(HOSTS[self.host_kind].layout)

    def observation(self) -> torch.Tensor:
        features = [
            self.last_accuracy / 100.0,
            self.last_loss,
            self.epoch_in_episode / self.config.episode_epochs,
        ]
        for slot in self.model.slots_by_id().values():
            onehot = [0.0] * len(_STAGES)
            onehot[_STAGES.index(slot.stage)] = 1.0
            alpha = 0.0 if slot.state is None else slot.state.alpha
            in_stage = 0 if slot.state is None else min(slot.state.epochs_in_stage, 10)
            features += [*onehot, alpha, in_stage / 10.0]
        return torch.tensor(features, dtype=torch.float32)

    def slot_mask(self, operation: Operation) -> torch.Tensor:
        """Which slots `operation` may act on; every slot for WAIT (the slot is then unused)."""
        stages = [slot.stage for slot in self.model.slots_by_id().values()]
        if operation is Operation.GERMINATE:
            allowed = [s in _EMPTY for s in stages]
        elif operation is Operation.ADVANCE:
            allowed = [s in _ADVANCEABLE for s in stages]
        elif operation is Operation.PRUNE:
            allowed = [s in LIVE_STAGES for s in stages]
        else:
            allowed = [True] * len(stages)
        return torch.tensor(allowed, dtype=torch.bool)

    def operation_mask(self) -> torch.Tensor:
        return torch.tensor([bool(self.slot_mask(op).any()) for op in Operation], dtype=torch.bool)

    # ---- acting ----------------------------------------------------------------------------

    def decode(self, action: torch.Tensor) -> ActionSpec:
        """Turn a factored action (op, slot, blueprint, blend) into an `ActionSpec`."""
        op, slot, blueprint, blend = (int(v) for v in action)
        operation = Operation(op)
        if operation is Operation.WAIT:
            return ActionSpec(operation.name, None, None, None)
        slot_id = self.slots.slot_ids[slot]
        if operation is Operation.GERMINATE:
            return ActionSpec(
                operation.name, slot_id, self.blueprints[blueprint], BLEND_ALGORITHMS[blend]
            )
        return ActionSpec(operation.name, slot_id, None, None)

    def apply(self, action: ActionSpec) -> ActionOutcome:
        """Apply an action; a masked-out (illegal) action raises ValueError from the lifecycle."""
        operation = Operation[action.operation]
        if operation is Operation.WAIT:
            return ActionOutcome(action, None)
        assert action.slot_id is not None
        if operation is Operation.GERMINATE:
            assert action.blueprint is not None and action.blend is not None
            with _Forked(self):
                transition = self.model.germinate(
                    action.slot_id,
                    action.blueprint,
                    BlendConfig(action.blend, self.config.blend_epochs),
                )
        elif operation is Operation.ADVANCE:
            with _Forked(self):  # entering BLENDING may create a gate
                transition = self.model.advance_stage(action.slot_id)
        else:
            transition = self.model.prune(action.slot_id)
        return ActionOutcome(action, f"{transition.from_stage.name}->{transition.to_stage.name}")

    def step(self, action: ActionSpec) -> StepResult:
        outcome = self.apply(action)
        loss_before, accuracy_before = self.last_loss, self.last_accuracy
        stages_before = self.model.stages()
        self._train_epoch()
        loss, accuracy = self.evaluate()
        fossilized_now = sum(
            1
            for slot_id, stage in self.model.stages().items()
            if stage is SeedStage.FOSSILIZED and stages_before[slot_id] is not SeedStage.FOSSILIZED
        )
        reward = compute_reward(
            LossRewardInputs(loss_before, loss),
            ContributionRewardInputs(
                accuracy_before=accuracy_before,
                accuracy_after=accuracy,
                live_seed_params=sum(p.numel() for p in self.model.seed_parameters()),
                fossilized_now=fossilized_now,
            ),
        )
        self.last_loss, self.last_accuracy = loss, accuracy
        self.episode_return += reward.total
        self.epoch_in_episode += 1
        ended = self.epoch_in_episode >= self.config.episode_epochs
        success = ended and accuracy >= EPISODE_SUCCESS_THRESHOLD
        if ended:
            self.episodes_completed += 1
            self.episode_successes += int(success)
            self._reset()
        return StepResult(outcome, reward, loss, accuracy, ended, success)

    def _train_epoch(self) -> None:
        model = self.model
        model.train()
        seed_params = list(model.seed_parameters())
        seed_optimizer = (
            torch.optim.SGD(seed_params, lr=self.config.seed_lr) if seed_params else None
        )
        loss_value, accuracy = 0.0, 0.0
        for _ in range(self.config.train_steps_per_epoch):
            batch = self.task.batch(self.generator)
            self.host_optimizer.zero_grad(set_to_none=True)
            if seed_optimizer is not None:
                seed_optimizer.zero_grad(set_to_none=True)
            loss, accuracy = self.task.loss_and_accuracy(model(batch.inputs), batch.targets)
            loss.backward()
            self.host_optimizer.step()
            if seed_optimizer is not None:
                seed_optimizer.step()
            loss_value = float(loss.detach())
            for slot in model.slots_by_id().values():
                if slot.seed is not None and slot.state is not None:
                    slot.state.metrics.record_step(loss_value, accuracy, None)
        model.step_epoch(train_loss=loss_value, train_accuracy=accuracy)

    def evaluate(self) -> tuple[float, float]:
        self.model.eval()
        with torch.no_grad():
            logits = self.model(self.validation.inputs)
            loss, accuracy = self.task.loss_and_accuracy(logits, self.validation.targets)
        return float(loss), accuracy

    def _reset(self) -> None:
        self.epoch_in_episode = 0
        self.episode_return = 0.0
        self._install(self._fresh_model())
        self.last_loss, self.last_accuracy = self.evaluate()

    # ---- checkpoint ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "schema_version": ENV_SCHEMA_VERSION,
            "model": self.model.checkpoint(),
            "host_optimizer": self.host_optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "validation_seed": self.validation_seed,
            "epoch_in_episode": self.epoch_in_episode,
            "episode_return": self.episode_return,
            "episodes_completed": self.episodes_completed,
            "episode_successes": self.episode_successes,
            "last_loss": self.last_loss,
            "last_accuracy": self.last_accuracy,
        }

    def load_state_dict(self, state: Any) -> None:
        fields = read_fields(
            state,
            {
                "model": Mapping,
                "host_optimizer": Mapping,
                "generator": torch.Tensor,
                "validation_seed": int,
                "epoch_in_episode": int,
                "episode_return": float,
                "episodes_completed": int,
                "episode_successes": int,
                "last_loss": float,
                "last_accuracy": float,
            },
            where="env state",
            version=ENV_SCHEMA_VERSION,
        )
        model = MorphogeneticModel.from_checkpoint(
            fields["model"], clock=self.clock, telemetry=self.telemetry
        )
        if model.slots != self.slots or model.host.kind != self.host_kind:
            raise ValueError(
                f"env state: checkpoint holds a {model.host.kind} model over "
                f"{list(model.slots.slot_ids)}, expected {self.host_kind} over "
                f"{list(self.slots.slot_ids)}"
            )
        self.validation_seed = fields["validation_seed"]
        self._install(model)
        self.host_optimizer.load_state_dict(fields["host_optimizer"])
        self.generator.set_state(fields["generator"])
        for name in (
            "epoch_in_episode",
            "episode_return",
            "episodes_completed",
            "episode_successes",
            "last_loss",
            "last_accuracy",
        ):
            setattr(self, name, fields[name])


class _Forked:
    """Run module initialisation in a forked global RNG seeded from the env's generator, so
    the env's randomness is all in one checkpointable stream and callers' RNG is untouched."""

    def __init__(self, env: MorphogeneticEnv) -> None:
        self.env = env
        self.fork = torch.random.fork_rng(devices=[])

    def __enter__(self) -> None:
        seed = int(torch.randint(0, 2**62, (1,), generator=self.env.generator))
        self.fork.__enter__()
        torch.manual_seed(seed)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.fork.__exit__(kind, error, traceback)
