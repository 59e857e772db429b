"""The PPO trainer over a `MorphogeneticEnv`, and its `TrainingState` checkpoint.

One call of `run_update()` is one batch: `num_steps` env epochs, then one PPO update.
Telemetry inside a batch, in this order (payload keys are a contract, see TELEMETRY_CONTRACT):

    per env epoch:  [lifecycle events of the action] EPOCH_COMPLETED
                    [lifecycle events of a finished blend come before it]
                    ANALYTICS_SNAPSHOT(kind="last_action")
    batch tail:     [VALUE_COLLAPSE_DETECTED] PPO_UPDATE_COMPLETED
                    ANALYTICS_SNAPSHOT(kind="batch_stats") BATCH_EPOCH_COMPLETED
                    ANALYTICS_SNAPSHOT(kind="action_distribution")

`state_dict()` is the TrainingState: primitives and tensors only, loadable with
`torch.load(weights_only=True)` and no allowlist. It holds everything the next update reads:
policy and optimizer (Adam moments and step counts; the annealed learning rate follows from
the update counter), normalizer statistics, the adapted entropy coefficient, counters, the
env (its model's config + state, the host optimizer, its data generator), the telemetry
sequence number and clock, and the RNG streams (python `random`, the global torch CPU
generator, the agent's generator). Checkpoints are taken between batches.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any

import torch

from pytest_ckpt.checks.loading import LOAD_ERRORS, torch_reason
from pytest_ckpt.reference.clock import ManualClock
from pytest_ckpt.reference.env import MorphogeneticEnv
from pytest_ckpt.reference.fields import read_fields
from pytest_ckpt.reference.model import MorphogeneticModel
from pytest_ckpt.reference.ppo import (
    ActionHeads,
    ActionMasks,
    FactoredPolicy,
    Operation,
    PPOConfig,
    RewardNormalizer,
    Rollout,
    RunningMeanStd,
    UpdateStats,
    adapt_entropy_coef,
    head_log_probs,
    ppo_update,
    sample_head,
    value_collapsed,
)
from pytest_ckpt.reference.rewards import RewardSummaryAccumulator
from pytest_ckpt.reference.slots import SlotConfig
from pytest_ckpt.reference.telemetry import TelemetryEventType, TelemetryRecorder

TRAINING_STATE_SCHEMA_VERSION = 1

TELEMETRY_CONTRACT: Mapping[str, frozenset[str]] = {
    "EPOCH_COMPLETED": frozenset({"epoch", "stages", "train_loss", "train_accuracy"}),
    "last_action": frozenset(
        {"kind", "update", "step", "action", "transition", "reward", "loss", "accuracy"}
    ),
    "VALUE_COLLAPSE_DETECTED": frozenset({"update", "value_std", "return_std"}),
    "PPO_UPDATE_COMPLETED": frozenset(
        {
            "update",
            "policy_loss",
            "value_loss",
            "entropy",
            "approx_kl",
            "clip_fraction",
            "explained_variance",
            "learning_rate",
            "ent_coef",
        }
    ),
    "batch_stats": frozenset(
        {
            "kind",
            "update",
            "steps",
            "reward_total",
            "reward_mean",
            "loss_component",
            "contribution_component",
            "episodes_completed",
            "episode_successes",
        }
    ),
    "BATCH_EPOCH_COMPLETED": frozenset({"update", "global_step", "episodes_completed"}),
    "action_distribution": frozenset({"kind", "update", "operations", "slots"}),
}


class Trainer:
    def __init__(
        self,
        *,
        host: str,
        slots: SlotConfig,
        config: PPOConfig | None = None,
        seed: int = 0,
        telemetry_enabled: bool = True,
        initial_model: MorphogeneticModel | None = None,
    ) -> None:
        self.config = config or PPOConfig()
        self.host, self.slots, self.seed = host, slots, seed
        self.clock = ManualClock()
        self.telemetry = TelemetryRecorder(self.clock, enabled=telemetry_enabled)
        self.env = MorphogeneticEnv(
            host,
            slots,
            self.config,
            clock=self.clock,
            telemetry=self.telemetry,
            seed=seed + 1,
            initial_model=initial_model,
        )
        self.generator = torch.Generator().manual_seed(seed)
        heads = ActionHeads(num_slots=slots.num_slots, num_blueprints=len(self.env.blueprints))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 2)
            self.policy = FactoredPolicy(self.env.obs_dim, heads, self.config.hidden)
        self.optimizer = torch.optim.Adam(
            self.policy.parameters(), lr=self.config.learning_rate, eps=1e-5
        )
        self.obs_norm = RunningMeanStd((self.env.obs_dim,))
        self.reward_norm = RewardNormalizer(self.config.gamma)
        self.update = 0
        self.global_step = 0
        self.ent_coef = self.config.ent_coef

    # ---- acting and learning ---------------------------------------------------------------

    def _act(
        self, obs: torch.Tensor, allowed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, ActionMasks]:
        """Sample (op, slot, blueprint, blend); op first, then a slot the op may act on."""
        op_mask = (self.env.operation_mask() & allowed).unsqueeze(0)
        all_slots = torch.ones(1, self.slots.num_slots, dtype=torch.bool)
        with torch.no_grad():
            logits, _ = self.policy(obs.unsqueeze(0), ActionMasks(op_mask, all_slots))
            op = sample_head(logits[0], self.generator)
            masks = ActionMasks(op_mask, self.env.slot_mask(Operation(int(op))).unsqueeze(0))
            logits, value = self.policy(obs.unsqueeze(0), masks)
            action = torch.cat(
                [op, *(sample_head(head, self.generator) for head in logits[1:])]
            ).unsqueeze(0)
            logp, _ = head_log_probs(logits, action)
        return action[0], logp[0], value[0], masks

    def run_update(self, *, operations: Collection[Operation] | None = None) -> UpdateStats:
        """One batch: `num_steps` env epochs, then a PPO update; emits the batch's telemetry.

        `operations` restricts what the controller may do in this batch (WAIT is always
        allowed); `{Operation.WAIT}` gives a warm-up batch that leaves every stage as it is.
        """
        allowed = torch.tensor(
            [operations is None or op in operations or op is Operation.WAIT for op in Operation]
        )
        rollout = Rollout()
        rewards = RewardSummaryAccumulator()
        operation_counts: Counter[str] = Counter()
        slot_counts: Counter[str] = Counter()
        for step in range(self.config.num_steps):
            raw_obs = self.env.observation()
            self.obs_norm.update(raw_obs)
            obs = self.obs_norm.normalize(raw_obs)
            action, logp, value, masks = self._act(obs, allowed)
            spec = self.env.decode(action)
            result = self.env.step(spec)
            self.global_step += 1
            operation_counts[spec.operation] += 1
            if spec.slot_id is not None:
                slot_counts[spec.slot_id] += 1
            self.telemetry.emit(
                TelemetryEventType.ANALYTICS_SNAPSHOT,
                kind="last_action",
                update=self.update,
                step=step,
                action=spec.to_dict(),
                transition=result.outcome.transition,
                reward=result.reward.total,
                loss=result.loss,
                accuracy=result.accuracy,
            )
            rewards.add(result.reward, episode_ended=result.episode_ended, success=result.success)
            rollout.obs.append(obs)
            rollout.op_masks.append(masks.operation[0])
            rollout.slot_masks.append(masks.slot[0])
            rollout.actions.append(action)
            rollout.log_probs.append(logp)
            rollout.values.append(value)
            rollout.rewards.append(self.reward_norm(result.reward.total, result.episode_ended))
            rollout.dones.append(result.episode_ended)
        next_obs = self.obs_norm.normalize(self.env.observation())
        with torch.no_grad():
            full = torch.ones(1, self.slots.num_slots, dtype=torch.bool)
            op_mask = (self.env.operation_mask() & allowed).unsqueeze(0)
            _, next_value = self.policy(next_obs.unsqueeze(0), ActionMasks(op_mask, full))
        stats = ppo_update(
            self.policy,
            self.optimizer,
            rollout,
            next_value[0],
            config=self.config,
            ent_coef=self.ent_coef,
            learning_rate=self.config.lr_at(self.update),
            generator=self.generator,
        )
        self.ent_coef = adapt_entropy_coef(self.ent_coef, stats.entropy, self.config)
        self._emit_batch_tail(stats, rewards, operation_counts, slot_counts)
        self.update += 1
        return stats

    def _emit_batch_tail(
        self,
        stats: UpdateStats,
        rewards: RewardSummaryAccumulator,
        operations: Counter[str],
        slot_counts: Counter[str],
    ) -> None:
        emit = self.telemetry.emit
        if value_collapsed(stats):
            emit(
                TelemetryEventType.VALUE_COLLAPSE_DETECTED,
                update=self.update,
                value_std=stats.value_std,
                return_std=stats.return_std,
            )
        emit(
            TelemetryEventType.PPO_UPDATE_COMPLETED,
            update=self.update,
            policy_loss=stats.policy_loss,
            value_loss=stats.value_loss,
            entropy=stats.entropy,
            approx_kl=stats.approx_kl,
            clip_fraction=stats.clip_fraction,
            explained_variance=stats.explained_variance,
            learning_rate=stats.learning_rate,
            ent_coef=stats.ent_coef,
        )
        emit(
            TelemetryEventType.ANALYTICS_SNAPSHOT,
            kind="batch_stats",
            update=self.update,
            **rewards.summary().to_dict(),
        )
        emit(
            TelemetryEventType.BATCH_EPOCH_COMPLETED,
            update=self.update,
            global_step=self.global_step,
            episodes_completed=self.env.episodes_completed,
        )
        emit(
            TelemetryEventType.ANALYTICS_SNAPSHOT,
            kind="action_distribution",
            update=self.update,
            operations={op.name: operations[op.name] for op in Operation},
            slots={slot_id: slot_counts[slot_id] for slot_id in self.slots},
        )

    # ---- TrainingState ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "schema_version": TRAINING_STATE_SCHEMA_VERSION,
            "host": self.host,
            "slots": self.slots.to_dict(),
            "seed": self.seed,
            "config": self.config.to_dict(),
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "obs_norm": self.obs_norm.state_dict(),
            "reward_norm": self.reward_norm.state_dict(),
            "update": self.update,
            "global_step": self.global_step,
            "ent_coef": self.ent_coef,
            "env": self.env.state_dict(),
            "telemetry": self.telemetry.state_dict(),
            "clock": self.clock.state_dict(),
            "rng": {
                "schema_version": TRAINING_STATE_SCHEMA_VERSION,
                "python": python_rng_state(),
                "torch_cpu": torch.get_rng_state(),
                "agent": self.generator.get_state(),
            },
        }

    @classmethod
    def from_state_dict(cls, state: Any, *, telemetry_enabled: bool = True) -> Trainer:
        """Fresh objects, then every piece of `state` loaded into them (strictly)."""
        fields = read_fields(
            state,
            {
                "host": str,
                "slots": Mapping,
                "seed": int,
                "config": Mapping,
                "policy": Mapping,
                "optimizer": Mapping,
                "obs_norm": Mapping,
                "reward_norm": Mapping,
                "update": int,
                "global_step": int,
                "ent_coef": float,
                "env": Mapping,
                "telemetry": Mapping,
                "clock": Mapping,
                "rng": Mapping,
            },
            where="TrainingState",
            version=TRAINING_STATE_SCHEMA_VERSION,
        )
        trainer = cls(
            host=fields["host"],
            slots=SlotConfig.from_dict(fields["slots"]),
            config=PPOConfig.from_dict(fields["config"]),
            seed=fields["seed"],
            telemetry_enabled=telemetry_enabled,
        )
        trainer.clock.load_state_dict(fields["clock"])
        trainer.telemetry.load_state_dict(fields["telemetry"])
        trainer.env.load_state_dict(fields["env"])
        trainer.policy.load_state_dict(fields["policy"], strict=True)
        trainer.optimizer.load_state_dict(fields["optimizer"])
        trainer.obs_norm.load_state_dict(fields["obs_norm"], strict=True)
        trainer.reward_norm.load_state_dict(fields["reward_norm"], strict=True)
        trainer.update, trainer.global_step = fields["update"], fields["global_step"]
        trainer.ent_coef = fields["ent_coef"]
        rng = read_fields(
            fields["rng"],
            {"python": Mapping, "torch_cpu": torch.Tensor, "agent": torch.Tensor},
            where="TrainingState.rng",
            version=TRAINING_STATE_SCHEMA_VERSION,
        )
        set_python_rng_state(rng["python"])
        torch.set_rng_state(rng["torch_cpu"])
        trainer.generator.set_state(rng["agent"])
        return trainer

    def save(self, path: str | os.PathLike[str]) -> None:
        torch.save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, telemetry_enabled: bool = True) -> Trainer:
        """Resume from a file written by `save`, with `weights_only=True` and no allowlist."""
        return cls.from_state_dict(load_weights_only(path), telemetry_enabled=telemetry_enabled)


def load_weights_only(path: str | os.PathLike[str]) -> Any:
    """`torch.load(weights_only=True)` whose failures are one-line ValueErrors naming the file
    (the useful line of torch's message: `pytest_ckpt.checks.loading.torch_reason`)."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (*LOAD_ERRORS, OSError) as err:
        reason = torch_reason(err)
        raise ValueError(f"{path}: not loadable with weights_only=True: {reason}") from err


def seed_global_rngs(seed: int) -> None:
    """Seed the global python and torch generators a TrainingState captures: a fresh run must
    not depend on what ran before it in the process, or on the process (python's `random` is
    seeded from the OS at start-up)."""
    random.seed(seed)
    torch.manual_seed(seed)


def python_rng_state() -> dict[str, Any]:
    """`random.getstate()` as primitives (its tuple would load too, but a dict documents it)."""
    version, internal, gauss_next = random.getstate()
    return {
        "schema_version": TRAINING_STATE_SCHEMA_VERSION,
        "version": version,
        "internal": list(internal),
        "gauss_next": gauss_next,
    }


def set_python_rng_state(state: Mapping[str, Any]) -> None:
    fields = read_fields(
        state,
        {"version": int, "internal": list, "gauss_next": (float, type(None))},
        where="TrainingState.rng.python",
        version=TRAINING_STATE_SCHEMA_VERSION,
    )
    random.setstate((fields["version"], tuple(fields["internal"]), fields["gauss_next"]))
