from __future__ import annotations

import math

import pytest
import torch

from pytest_ckpt.reference import GradientHealthMonitor, MorphogeneticModel, SeedStage
from pytest_ckpt.reference.scenarios import build_at_stage
from pytest_ckpt.reference.slot import SeedSlot
from pytest_ckpt.reference.tasks import SyntheticTask


def _backward(model: MorphogeneticModel, seed: int = 0) -> None:
    batch = SyntheticTask(model.host).batch(torch.Generator().manual_seed(seed))
    model.train()
    model.zero_grad(set_to_none=True)
    loss, _ = SyntheticTask.loss_and_accuracy(model(batch.inputs), batch.targets)
    loss.backward()


def test_a_training_seed_puts_no_gradient_into_the_host() -> None:
    germinated = build_at_stage("cnn", "1x3", SeedStage.GERMINATED)
    training = MorphogeneticModel.from_checkpoint(germinated.checkpoint())
    for slot_id in training.seed_slots:
        training.advance_stage(slot_id)
    _backward(germinated)
    _backward(training)
    for (name, a), b in zip(
        germinated.host.named_parameters(), training.host.parameters(), strict=True
    ):
        assert torch.equal(a.grad, b.grad), name
    assert all(p.grad is not None for p in training.seed_parameters())


def test_probe_finds_no_violation_in_isolated_seeds() -> None:
    model = build_at_stage("transformer", "2x2", SeedStage.TRAINING)
    monitor = GradientHealthMonitor(model)
    x = SyntheticTask(model.host).batch(torch.Generator().manual_seed(1)).inputs
    assert monitor.probe_isolation(x) == ()


def test_probe_flags_a_seed_that_sees_live_host_activations(monkeypatch) -> None:
    model = build_at_stage("cnn", "1x3", SeedStage.BLENDING)
    monkeypatch.setattr(SeedSlot, "seed_input", lambda self, h: h)  # the bug: no detach
    x = SyntheticTask(model.host).batch(torch.Generator().manual_seed(1)).inputs
    assert GradientHealthMonitor(model).probe_isolation(x) == ("r0c0", "r0c1", "r0c2")


def test_probe_leaves_batchnorm_statistics_alone() -> None:
    model = build_at_stage("cnn", "1x1", SeedStage.TRAINING)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    x = SyntheticTask(model.host).batch(torch.Generator().manual_seed(1)).inputs
    GradientHealthMonitor(model).probe_isolation(x)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_foreach_and_per_tensor_norms_agree() -> None:
    model = build_at_stage("cnn", "2x2", SeedStage.BLENDING)
    _backward(model)
    batched = GradientHealthMonitor(model, use_foreach=True).report()
    looped = GradientHealthMonitor(model, use_foreach=False).report()
    assert batched.host_norm == pytest.approx(looped.host_norm, rel=1e-6)
    assert batched.seed_norms == pytest.approx(looped.seed_norms, rel=1e-6)
    assert batched.host_norm > 0 and all(n > 0 for n in batched.seed_norms.values())
    assert batched.healthy


def test_fallback_is_used_where_torch_has_no_foreach_norm(monkeypatch) -> None:
    model = build_at_stage("cnn", "1x1", SeedStage.TRAINING)
    _backward(model)
    expected = GradientHealthMonitor(model, use_foreach=True).report().host_norm
    monkeypatch.delattr(torch, "_foreach_norm")
    monitor = GradientHealthMonitor(model)
    assert monitor.use_foreach is False
    assert monitor.report().host_norm == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="no torch._foreach_norm"):
        GradientHealthMonitor(model, use_foreach=True)


@pytest.mark.parametrize("use_foreach", [True, False])
def test_non_finite_gradients_are_named(use_foreach: bool) -> None:
    model = build_at_stage("cnn", "1x1", SeedStage.TRAINING)
    _backward(model)
    model.seed_slots["r0c0"].seed[0].weight.grad[0, 0, 0, 0] = math.nan
    report = GradientHealthMonitor(model, use_foreach=use_foreach).report()
    assert report.non_finite == ("seed_slots.r0c0.seed.0.weight",)
    assert not report.healthy
