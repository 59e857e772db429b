"""The forward probe: the rebuilt system must give the live system's output on a fixed batch,
which catches what comparing exported states cannot see."""

from __future__ import annotations

import pytest
import torch

from pytest_ckpt import ModuleSubject
from pytest_ckpt.checks.roundtrip import check_resume, check_roundtrip
from pytest_ckpt.errors import RoundTripMismatch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)


def bn_net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1)
    )


class TrainablesOnly(ModuleSubject):
    """Saves the trainable parameters only, as fine-tuning checkpoints often do, and loads them
    into a base model with strict=False: the BatchNorm statistics (buffers) are silently left
    at their initial values."""

    def export_state(self, system):
        state = dict(super().export_state(system))
        state["model"] = {k: p.detach() for k, p in system["model"].named_parameters()}
        return state

    def rebuild(self, state):
        base = self._fresh(state["seed"])["model"].state_dict()
        system = super().rebuild({**state, "model": base})
        system["model"].load_state_dict(state["model"], strict=False)
        return system


def test_the_probe_catches_statistics_a_strict_false_load_dropped(tmp_path) -> None:
    """The exported states compare equal and resuming is exact (in training mode BatchNorm
    uses the batch's statistics), so only the probe sees the loss, and the diagnosis names it."""
    unprobed = TrainablesOnly(bn_net, make_batch=batch, probe=False)
    system = unprobed.build(grid=(1, 1), stage="TRAINING", seed=0)
    check_roundtrip(unprobed, system, tmp_path / "a.pt")
    check_resume(unprobed, system, 2, tmp_path / "b.pt")

    probed = TrainablesOnly(bn_net, make_batch=batch)
    system = probed.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.raises(RoundTripMismatch) as failure:
        check_roundtrip(probed, system, tmp_path / "c.pt")
    lines = str(failure.value).splitlines()
    assert lines[0] == (
        "system['model'].1.running_mean (a buffer of BatchNorm1d) differs between the live and "
        "the rebuilt system; it is not in export_state()"
    )
    assert any(line.startswith("the rebuilt system's output on the probe batch") for line in lines)
    assert "  probe: 8 of 8 elements differ" in "\n".join(lines)


class Net(torch.nn.Module):
    def __init__(self, activation: str = "tanh", slope: float = 0.01) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(4, 8)
        activations = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}
        self.activation = (
            activations[activation]() if activation in activations else (torch.nn.LeakyReLU(slope))
        )
        self.out = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.out(self.activation(self.hidden(x)))


class RebuildsTheDefaultNet(ModuleSubject):
    def make_model_for(self, state):
        return Net()  # the activation was never saved: the default comes back


def test_a_module_rebuilt_as_another_class_is_named_before_the_probe_runs(tmp_path) -> None:
    subject = RebuildsTheDefaultNet(lambda: Net("relu"), make_batch=batch)
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    activation = "torch.nn.modules.activation"
    with pytest.raises(RoundTripMismatch, match="is built differently") as failure:
        check_roundtrip(subject, system, tmp_path / "a.pt")
    assert failure.value.items == (
        f"system['model'].activation: type {activation}.ReLU != {activation}.Tanh",
    )


class RebuildsTheDefaultSlope(ModuleSubject):
    def make_model_for(self, state):
        return Net("leaky")  # the slope was never saved: the default comes back


def test_the_probe_catches_the_wrong_module_rebuilt(tmp_path) -> None:
    """Same classes, same state: only the output shows the slope that was not saved."""
    subject = RebuildsTheDefaultSlope(lambda: Net("leaky", slope=0.5), make_batch=batch)
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.raises(RoundTripMismatch, match="output on the probe batch differs"):
        check_roundtrip(subject, system, tmp_path / "a.pt")


def test_probing_changes_nothing_a_step_reads() -> None:
    subject = ModuleSubject(bn_net, make_batch=batch)
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    before = subject.export_state(system)
    assert torch.equal(subject.probe(system), subject.probe(system))
    after = subject.export_state(system)
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
    assert torch.equal(before["torch_rng"], after["torch_rng"]) and system["model"].training
