from __future__ import annotations

import pytest
import torch

from pytest_ckpt.reference import SeedStage, SlotConfig, build_at_stage
from pytest_ckpt.reference.ppo import (
    ActionHeads,
    FactoredPolicy,
    Operation,
    PPOConfig,
    RunningMeanStd,
    UpdateStats,
    compute_gae,
    value_collapsed,
)
from pytest_ckpt.reference.rewards import (
    EPISODE_SUCCESS_THRESHOLD,
    ContributionRewardInputs,
    LossRewardInputs,
    RewardSummaryAccumulator,
    compute_reward,
)
from pytest_ckpt.reference.trainer import TELEMETRY_CONTRACT, Trainer


@pytest.mark.parametrize(
    "slot_ids",
    [
        ["r0c0"],
        ["r0c0", "r1c0"],
        ["r0c0", "r0c1", "r0c2"],
        ["r0c0", "r0c1", "r1c0", "r2c1", "r3c3"],
    ],
)
@pytest.mark.parametrize("host", ["cnn", "transformer"])
def test_policy_heads_and_masks_are_sized_by_the_slot_config(host: str, slot_ids) -> None:
    slots = SlotConfig.from_ids(slot_ids)
    trainer = Trainer(host=host, slots=slots, config=PPOConfig(num_steps=2, num_minibatches=1))
    assert trainer.policy.slot.out_features == slots.num_slots
    assert trainer.env.slot_mask(Operation.GERMINATE).shape == (slots.num_slots,)
    assert trainer.env.observation().shape == (trainer.env.obs_dim,)
    trainer.run_update()
    distribution = trainer.telemetry.events[-1].payload
    assert list(distribution["slots"]) == list(slots.slot_ids)


def test_masks_follow_the_seed_states() -> None:
    trainer = Trainer(host="cnn", slots=SlotConfig.grid(1, 1))
    env = trainer.env
    # All DORMANT: only WAIT and GERMINATE are legal.
    assert env.operation_mask().tolist() == [True, True, False, False]
    assert env.slot_mask(Operation.ADVANCE).tolist() == [False]
    model = build_at_stage("cnn", "1x3", SeedStage.FOSSILIZED)
    trainer = Trainer(host="cnn", slots=model.slots, initial_model=model)
    # Every seed fossilized: nothing to germinate, advance or prune.
    assert trainer.env.operation_mask().tolist() == [True, False, False, False]


def test_sampled_actions_are_always_legal() -> None:
    trainer = Trainer(host="transformer", slots=SlotConfig.grid(2, 2), seed=3)
    for _ in range(5):
        trainer.run_update()  # env.apply raises ValueError on any illegal transition
    operations = [
        e.payload["action"]["operation"]
        for e in trainer.telemetry.events
        if e.payload.get("kind") == "last_action"
    ]
    assert {"GERMINATE", "ADVANCE"} <= set(operations)


def _kinds(events) -> list[str]:
    return [
        e.event_type.name + (f"/{e.payload['kind']}" if "kind" in e.payload else "") for e in events
    ]


def test_telemetry_order_counts_and_payload_keys_follow_the_contract() -> None:
    config = PPOConfig(num_steps=4)
    trainer = Trainer(host="cnn", slots=SlotConfig.grid(1, 3), config=config, seed=1)
    for _ in range(3):
        trainer.run_update()
    events = trainer.telemetry.drain()
    assert [e.seq for e in events] == list(range(len(events)))
    kinds = _kinds(events)
    batches, current = [], []
    for kind in kinds:
        current.append(kind)
        if kind == "ANALYTICS_SNAPSHOT/action_distribution":
            batches.append(current)
            current = []
    assert len(batches) == 3 and current == []
    lifecycle = {"SEED_STAGE_CHANGED", "SEED_GERMINATED", "SEED_FOSSILIZED", "SEED_PRUNED"}
    for batch in batches:
        body = [k for k in batch if k not in lifecycle]
        tail = body[-4:]
        assert tail == [
            "PPO_UPDATE_COMPLETED",
            "ANALYTICS_SNAPSHOT/batch_stats",
            "BATCH_EPOCH_COMPLETED",
            "ANALYTICS_SNAPSHOT/action_distribution",
        ]
        head = [k for k in body[:-4] if k != "VALUE_COLLAPSE_DETECTED"]
        assert head == ["EPOCH_COMPLETED", "ANALYTICS_SNAPSHOT/last_action"] * config.num_steps
    for event in events:
        key = event.payload.get("kind", event.event_type.name)
        if key in TELEMETRY_CONTRACT:
            assert set(event.payload) == TELEMETRY_CONTRACT[key], key


def test_value_collapse_is_detected_and_emitted_before_the_update_event() -> None:
    trainer = Trainer(host="transformer", slots=SlotConfig.grid(1, 2), seed=0)
    with torch.no_grad():
        trainer.policy.value.weight.zero_()
        trainer.policy.value.bias.zero_()
    trainer.policy.value.requires_grad_(False)  # the critic stays constant
    trainer.run_update()
    kinds = _kinds(trainer.telemetry.drain())
    collapse = kinds.index("VALUE_COLLAPSE_DETECTED")
    assert kinds[collapse + 1] == "PPO_UPDATE_COMPLETED"


def test_value_collapse_rule() -> None:
    stats = dict(
        policy_loss=0,
        value_loss=0,
        entropy=1,
        approx_kl=0,
        clip_fraction=0,
        explained_variance=0,
        learning_rate=1e-3,
        ent_coef=0.01,
    )
    assert value_collapsed(UpdateStats(value_std=0.0, return_std=0.5, **stats))
    assert not value_collapsed(UpdateStats(value_std=0.2, return_std=0.5, **stats))
    assert not value_collapsed(UpdateStats(value_std=0.0, return_std=0.0, **stats))


def test_gae_matches_a_hand_computation() -> None:
    rewards = torch.tensor([1.0, 0.0, 2.0])
    values = torch.tensor([0.5, 0.25, 1.0])
    dones = torch.tensor([0.0, 1.0, 0.0])
    adv, ret = compute_gae(rewards, values, dones, torch.tensor(4.0), gamma=0.5, gae_lambda=0.5)
    d2 = 2.0 + 0.5 * 4.0 - 1.0  # 3.0
    d1 = 0.0 - 0.25  # episode ended: no bootstrap
    d0 = 1.0 + 0.5 * 0.25 - 0.5
    a0 = d0 + 0.25 * d1
    assert adv.tolist() == pytest.approx([a0, d1, d2])
    assert ret.tolist() == pytest.approx([a0 + 0.5, d1 + 0.25, d2 + 1.0])


def test_running_mean_std_matches_the_pooled_statistics() -> None:
    data = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    stats = RunningMeanStd((3,))
    for chunk in data.split(7):
        stats.update(chunk)
    assert torch.allclose(stats.mean, data.mean(0), atol=1e-5)
    assert torch.allclose(stats.var, data.var(0, unbiased=False), atol=1e-4)


def test_rewards_from_typed_inputs() -> None:
    reward = compute_reward(
        LossRewardInputs(loss_before=2.0, loss_after=1.5),
        ContributionRewardInputs(
            accuracy_before=40.0, accuracy_after=50.0, live_seed_params=1000, fossilized_now=1
        ),
    )
    assert reward.loss == 0.5
    assert reward.contribution == pytest.approx(0.1 - 0.001 + 0.1)
    clipped = compute_reward(LossRewardInputs(9.0, 0.0), ContributionRewardInputs(0, 0, 0, 0))
    assert clipped.loss == 1.0
    accumulator = RewardSummaryAccumulator()
    accumulator.add(reward, episode_ended=True, success=True)
    accumulator.add(clipped, episode_ended=False, success=False)
    summary = accumulator.summary()
    assert (summary.steps, summary.episodes_completed, summary.episode_successes) == (2, 1, 1)
    assert EPISODE_SUCCESS_THRESHOLD == 80.0


def test_ppo_config_round_trips_and_validates() -> None:
    config = PPOConfig(num_steps=8, num_minibatches=4)
    assert PPOConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="multiple of num_minibatches"):
        PPOConfig(num_steps=3, num_minibatches=2)
    with pytest.raises(ValueError, match="PPOConfig.gamma must be > 0"):
        PPOConfig(gamma=0.0)
    with pytest.raises(ValueError, match="PPOConfig: field 'num_steps' must be int"):
        PPOConfig.from_dict(config.to_dict() | {"num_steps": 8.0})
    assert config.lr_at(0) == config.learning_rate
    assert config.lr_at(config.total_updates) == 0.0


def test_factored_policy_masks_illegal_choices_to_zero_probability() -> None:
    heads = ActionHeads(num_slots=3, num_blueprints=2)
    policy = FactoredPolicy(obs_dim=5, heads=heads, hidden=8)
    from pytest_ckpt.reference.ppo import ActionMasks

    masks = ActionMasks(
        torch.tensor([[True, False, True, False]]), torch.tensor([[False, True, False]])
    )
    logits, _ = policy(torch.zeros(1, 5), masks)
    op_probs = torch.softmax(logits[0], -1)[0]
    slot_probs = torch.softmax(logits[1], -1)[0]
    assert op_probs[1] == 0 and op_probs[3] == 0
    assert slot_probs.tolist() == [0.0, 1.0, 0.0]
