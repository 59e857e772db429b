"""ModuleSubject holds what real training state has (schedulers, a GradScaler, BatchNorm
statistics, a model's own loss, an optimizer made from the model) under the project's own
phase names, and the checks catch each piece a rebuild forgets."""

from __future__ import annotations

import pytest
import torch

from pytest_ckpt import ModuleSubject, SubjectError
from pytest_ckpt.checks.roundtrip import check_resume, check_roundtrip
from pytest_ckpt.errors import ResumeMismatch, RoundTripMismatch
from pytest_ckpt.subject import check_subject


def batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)


def bn_net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 1)
    )


def full_subject(**overrides) -> ModuleSubject:
    options = dict(
        make_batch=batch,
        make_optimizer=lambda model: torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        make_schedulers=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
        make_scaler=lambda: torch.amp.GradScaler("cpu"),
        stages={"WARMUP": 1, "DECAY": 5},
        name="full",
    )
    options.update(overrides)
    return ModuleSubject(bn_net, **options)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_phases_schedulers_scaler_and_batchnorm_round_trip_and_resume_exactly(tmp_path) -> None:
    subject = full_subject()
    check_subject(subject, origin="test")
    assert subject.stages() == ("WARMUP", "DECAY")
    lrs = {}
    for stage in subject.stages():
        system = subject.build(grid=(1, 1), stage=stage, seed=0)
        state = check_roundtrip(subject, system, tmp_path / f"{stage}.pt").state
        assert state["schedulers"][0]["last_epoch"] == subject.stage_steps[stage]
        assert "scale" in state["scaler"] and "running_mean" in str(list(state["model"]))
        records = check_resume(subject, system, 2, tmp_path / f"{stage}-resume.pt")
        lrs[stage] = records[0]["metrics"]["lr"]
    assert lrs == {"WARMUP": 0.05, "DECAY": 0.0125}  # the lr after the step: the schedule moved


class ForgetsBatchNormStatistics(ModuleSubject):
    def rebuild(self, state):
        system = super().rebuild(state)
        system["model"][1].reset_running_stats()
        return system


def test_batchnorm_statistics_lost_on_rebuild_are_named(tmp_path) -> None:
    subject = ForgetsBatchNormStatistics(bn_net, make_batch=batch, probe=False)
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.raises(RoundTripMismatch, match=r"\['1\.running_mean'\]: 8 of 8 elements differ"):
        check_roundtrip(subject, system, tmp_path / "c.pt")


class ForgetsTheScheduler(ModuleSubject):
    def rebuild(self, state):
        return super().rebuild({**state, "schedulers": [self._fresh_scheduler_state()]})

    def _fresh_scheduler_state(self):
        return self._fresh(0)["schedulers"][0].state_dict()


def test_a_forgotten_scheduler_changes_no_metric_but_the_final_state_catches_it(tmp_path) -> None:
    """PITFALLS: after one step a lost scheduler position changes no loss; the lr metric and
    the final-state comparison show it, and the diagnosis names it first."""
    subject = ForgetsTheScheduler(
        bn_net,
        make_batch=batch,
        make_schedulers=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2),
        stages={"DECAY": 3},
    )
    system = subject.build(grid=(1, 1), stage="DECAY", seed=0)
    with pytest.raises(ResumeMismatch) as failure:
        check_resume(subject, system, 1, tmp_path / "c.pt")
    first = str(failure.value).splitlines()[0]
    assert first.startswith("system['schedulers'][0] (a StepLR) is at step 3 in the continued")
    assert "['last_epoch']: 4 != 1" in str(failure.value)


class OutputWithLoss(dict):
    """What a transformers `ModelOutput` is: a dict with attribute access."""

    __getattr__ = dict.__getitem__


class ModelWithItsOwnLoss(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, features, labels):
        logits = self.linear(features)
        return OutputWithLoss(loss=torch.nn.functional.mse_loss(logits, labels), logits=logits)


def test_a_model_that_returns_its_own_loss_from_keyword_batches(tmp_path) -> None:
    made_with = []

    def make_optimizer(model):
        made_with.append(type(model).__name__)
        return torch.optim.AdamW(model.parameters(), lr=1e-2)

    subject = ModuleSubject(
        ModelWithItsOwnLoss,
        make_batch=lambda g: dict(zip(("features", "labels"), batch(g), strict=True)),
        make_optimizer=make_optimizer,
    )
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    check_roundtrip(subject, system, tmp_path / "a.pt")
    check_resume(subject, system, 1, tmp_path / "b.pt")
    assert set(made_with) == {"ModelWithItsOwnLoss"}  # the factory receives the model
    assert set(subject.probe(system)) == {"loss", "logits"}


def test_a_loss_fn_reads_the_output_and_the_targets(tmp_path) -> None:
    subject = ModuleSubject(
        lambda: torch.nn.Linear(4, 1),
        make_batch=batch,
        loss_fn=lambda output, targets: (output - targets).abs().mean(),
    )
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    loss = subject.step(system).metrics["loss"]
    assert loss > 0 and check_resume(subject, system, 1, tmp_path / "a.pt")


def test_no_loss_anywhere_is_a_subject_error_saying_what_to_give() -> None:
    subject = ModuleSubject(lambda: torch.nn.Linear(4, 1), make_batch=lambda g: batch(g)[0])
    with pytest.raises(SubjectError, match="give ModuleSubject a loss_fn"):
        subject.build(grid=(1, 1), stage="TRAINING", seed=0)


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ({"WARMUP": 0}, "an optimizer that never stepped has an empty state"),
        ({"warm up": 2}, "stage names are words"),
        ({}, "at least one stage"),
        ({"A": 2, "B": 2}, "same number of steps"),
    ],
)
def test_stage_definitions_that_cannot_work_are_refused(stages, message) -> None:
    with pytest.raises(ValueError, match=message):
        ModuleSubject(bn_net, make_batch=batch, stages=stages)
