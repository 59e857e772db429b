"""A small PPO you can read top to bottom (after CleanRL): config, policy, normalizers, update.

The policy has factored action heads sized from the `SlotConfig`: an operation, the slot it
applies to, and, for GERMINATE, a blueprint and a blend schedule. Illegal choices are masked
(logits set to -inf) from the seed states, so the same code runs with 1, 2, 3 or N slots.
Nothing here draws from the global RNG: sampling and minibatch order use a `torch.Generator`
that the trainer checkpoints.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pytest_ckpt.reference.blending import BLEND_ALGORITHMS
from pytest_ckpt.reference.fields import read_fields

PPO_SCHEMA_VERSION = 1


class Operation(enum.IntEnum):
    WAIT = 0
    GERMINATE = 1
    ADVANCE = 2
    PRUNE = 3


@dataclass(slots=True, frozen=True)
class PPOConfig:
    """Every hyper-parameter in one place."""

    num_steps: int = 4  # env epochs per rollout (one PPO update per rollout)
    total_updates: int = 100  # horizon of the linear learning-rate annealing
    learning_rate: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    update_epochs: int = 2
    num_minibatches: int = 2
    clip_coef: float = 0.2
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    ent_coef: float = 0.01  # initial value; adapted towards target_entropy each update
    target_entropy: float = 1.0
    ent_coef_bounds: tuple[float, float] = (1e-4, 0.1)
    hidden: int = 64
    blend_epochs: int = 3  # blend length for seeds the controller germinates
    episode_epochs: int = 8  # env epochs per episode
    model_lr: float = 1e-3  # Adam on the host of the trained model
    seed_lr: float = 0.05  # plain SGD on seeds and gates
    train_steps_per_epoch: int = 2

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
                raise ValueError(f"PPOConfig.{f.name} must be > 0, got {value}")
        if self.num_steps % self.num_minibatches:
            raise ValueError("PPOConfig.num_steps must be a multiple of num_minibatches")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ent_coef_bounds"] = list(self.ent_coef_bounds)
        return {"schema_version": PPO_SCHEMA_VERSION, **data}

    @classmethod
    def from_dict(cls, data: Any) -> PPOConfig:
        spec = {
            f.name: (list, tuple) if f.name == "ent_coef_bounds" else type(f.default)
            for f in dataclasses.fields(cls)
        }
        fields = read_fields(data, spec, where="PPOConfig", version=PPO_SCHEMA_VERSION)
        fields["ent_coef_bounds"] = tuple(float(v) for v in fields["ent_coef_bounds"])
        return cls(**fields)

    def lr_at(self, update: int) -> float:
        """Linearly annealed learning rate for update number `update` (0-based)."""
        return self.learning_rate * max(1.0 - update / self.total_updates, 0.0)


@dataclass(slots=True, frozen=True)
class ActionHeads:
    """Sizes of the factored heads; all derived from the slot grid and the host layout."""

    num_slots: int
    num_blueprints: int
    num_blends: int = len(BLEND_ALGORITHMS)
    num_operations: int = len(Operation)


class FactoredPolicy(nn.Module):
    """Shared trunk; heads for operation, slot, blueprint, blend; and a value head."""

    def __init__(self, obs_dim: int, heads: ActionHeads, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.trunk = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
        )
        self.operation = nn.Linear(hidden, heads.num_operations)
        self.slot = nn.Linear(hidden, heads.num_slots)
        self.blueprint = nn.Linear(hidden, heads.num_blueprints)
        self.blend = nn.Linear(hidden, heads.num_blends)
        self.value = nn.Linear(hidden, 1)

    def forward(
        self, obs: torch.Tensor, masks: ActionMasks
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Masked logits per head (operation, slot, blueprint, blend) and the value."""
        z = self.trunk(obs)
        neg = torch.finfo(z.dtype).min
        op_logits = self.operation(z).masked_fill(~masks.operation, neg)
        slot_logits = self.slot(z).masked_fill(~masks.slot, neg)
        return [op_logits, slot_logits, self.blueprint(z), self.blend(z)], self.value(z).squeeze(-1)


@dataclass(slots=True, frozen=True)
class ActionMasks:
    """Boolean masks: `operation` (batch, num_ops); `slot` (batch, num_slots) for the chosen op."""

    operation: torch.Tensor
    slot: torch.Tensor


def head_log_probs(
    logits: list[torch.Tensor], actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint log-prob and entropy of factored actions (batch, 4).

    Blueprint and blend only matter for GERMINATE, so they count only there; the slot head
    does not count for WAIT.
    """
    op = actions[:, 0]
    uses_slot = (op != Operation.WAIT).float()
    uses_germ = (op == Operation.GERMINATE).float()
    weights = [torch.ones_like(uses_slot), uses_slot, uses_germ, uses_germ]
    total_logp = torch.zeros_like(uses_slot)
    total_entropy = torch.zeros_like(uses_slot)
    for i, (head, weight) in enumerate(zip(logits, weights, strict=True)):
        logp_all = F.log_softmax(head, dim=-1)
        total_logp = total_logp + weight * logp_all.gather(1, actions[:, i : i + 1]).squeeze(1)
        p = logp_all.exp()
        entropy = -(p * logp_all.clamp(min=-1e9)).sum(-1)
        total_entropy = total_entropy + weight * entropy
    return total_logp, total_entropy


def sample_head(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One categorical draw per row from `generator` (Categorical.sample takes no generator)."""
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


class RunningMeanStd(nn.Module):
    """Running mean/variance (Chan et al. parallel update) in float64 buffers, so a
    normalizer's statistics travel in a state_dict and resume exactly."""

    mean: torch.Tensor  # buffers (register_buffer)
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    def update(self, batch: torch.Tensor) -> None:
        batch = batch.to(torch.float64).reshape(-1, *self.mean.shape)
        batch_mean, batch_var, n = batch.mean(0), batch.var(0, unbiased=False), batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        m2 = self.var * self.count + batch_var * n + delta.pow(2) * self.count * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def normalize(self, x: torch.Tensor, clip: float = 10.0) -> torch.Tensor:
        z = (x.to(torch.float64) - self.mean) / torch.sqrt(self.var + 1e-8)
        return z.clamp(-clip, clip).to(torch.float32)


class RewardNormalizer(nn.Module):
    """Scale rewards by the running std of the discounted return (as gym's NormalizeReward)."""

    discounted_return: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, gamma: float) -> None:
        super().__init__()
        self.gamma = gamma
        self.stats = RunningMeanStd()
        self.register_buffer("discounted_return", torch.zeros((), dtype=torch.float64))

    def __call__(self, reward: float, done: bool) -> float:
        self.discounted_return.mul_(self.gamma).add_(reward)
        self.stats.update(self.discounted_return.reshape(1))
        scaled = reward / math.sqrt(float(self.stats.var) + 1e-8)
        if done:
            self.discounted_return.zero_()
        return scaled


@dataclass(slots=True)
class Rollout:
    """One PPO batch, filled step by step by the trainer."""

    obs: list[torch.Tensor] = dataclasses.field(default_factory=list)
    op_masks: list[torch.Tensor] = dataclasses.field(default_factory=list)
    slot_masks: list[torch.Tensor] = dataclasses.field(default_factory=list)
    actions: list[torch.Tensor] = dataclasses.field(default_factory=list)
    log_probs: list[torch.Tensor] = dataclasses.field(default_factory=list)
    values: list[torch.Tensor] = dataclasses.field(default_factory=list)
    rewards: list[float] = dataclasses.field(default_factory=list)
    dones: list[bool] = dataclasses.field(default_factory=list)


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    *,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns by generalized advantage estimation; `dones[t]` ends step t."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(())
    for t in reversed(range(len(rewards))):
        following = next_value if t == len(rewards) - 1 else values[t + 1]
        alive = 1.0 - dones[t]
        delta = rewards[t] + gamma * following * alive - values[t]
        last = delta + gamma * gae_lambda * alive * last
        advantages[t] = last
    return advantages, advantages + values


@dataclass(slots=True, frozen=True)
class UpdateStats:
    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float
    clip_fraction: float
    explained_variance: float
    value_std: float
    return_std: float
    learning_rate: float
    ent_coef: float


def ppo_update(
    policy: FactoredPolicy,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    next_value: torch.Tensor,
    *,
    config: PPOConfig,
    ent_coef: float,
    learning_rate: float,
    generator: torch.Generator,
) -> UpdateStats:
    """One clipped-objective PPO update over `rollout`."""
    obs = torch.stack(rollout.obs)
    masks = ActionMasks(torch.stack(rollout.op_masks), torch.stack(rollout.slot_masks))
    actions = torch.stack(rollout.actions)
    old_logp = torch.stack(rollout.log_probs)
    values = torch.stack(rollout.values)
    rewards = torch.tensor(rollout.rewards, dtype=torch.float32)
    dones = torch.tensor(rollout.dones, dtype=torch.float32)
    with torch.no_grad():
        advantages, returns = compute_gae(
            rewards, values, dones, next_value, gamma=config.gamma, gae_lambda=config.gae_lambda
        )
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    batch = len(rollout.rewards)
    minibatch = batch // config.num_minibatches
    clip_fractions, pg_loss, v_loss, entropy, approx_kl = [], 0.0, 0.0, 0.0, 0.0
    for _ in range(config.update_epochs):
        order = torch.randperm(batch, generator=generator)
        for start in range(0, batch, minibatch):
            idx = order[start : start + minibatch]
            logits, new_values = policy(
                obs[idx], ActionMasks(masks.operation[idx], masks.slot[idx])
            )
            logp, ent = head_log_probs(logits, actions[idx])
            log_ratio = logp - old_logp[idx]
            ratio = log_ratio.exp()
            adv = advantages[idx]
            if len(idx) > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            pg = torch.max(
                -adv * ratio, -adv * ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef)
            ).mean()
            vl = 0.5 * (new_values - returns[idx]).pow(2).mean()
            ent_mean = ent.mean()
            loss = pg - ent_coef * ent_mean + config.vf_coef * vl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                approx_kl = float(((ratio - 1) - log_ratio).mean())
                clip_fractions.append(float(((ratio - 1).abs() > config.clip_coef).float().mean()))
            pg_loss, v_loss, entropy = (
                float(pg.detach()),
                float(vl.detach()),
                float(ent_mean.detach()),
            )
    var_returns = float(returns.var(unbiased=False))
    # 0.0 rather than NaN when returns are constant: NaN != NaN would break payload equality.
    explained = (
        0.0
        if var_returns == 0
        else 1.0 - float((returns - values).var(unbiased=False)) / var_returns
    )
    return UpdateStats(
        policy_loss=pg_loss,
        value_loss=v_loss,
        entropy=entropy,
        approx_kl=approx_kl,
        clip_fraction=sum(clip_fractions) / len(clip_fractions),
        explained_variance=explained,
        value_std=float(values.std(unbiased=False)),
        return_std=math.sqrt(var_returns),
        learning_rate=learning_rate,
        ent_coef=ent_coef,
    )


def adapt_entropy_coef(ent_coef: float, entropy: float, config: PPOConfig) -> float:
    """Nudge the entropy bonus towards `target_entropy`: the adapted value is trainer state
    that a resume must restore (real projects lost it to `__init__`)."""
    factor = 1.05 if entropy < config.target_entropy else 1 / 1.05
    low, high = config.ent_coef_bounds
    return min(max(ent_coef * factor, low), high)


def value_collapsed(stats: UpdateStats) -> bool:
    """The critic predicts a constant while returns still vary."""
    return stats.value_std < 1e-4 and stats.return_std > 1e-3
