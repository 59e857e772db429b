"""A resume that differs says why first: the hidden state that export_state() left out (or
rebuild() did not restore), by name, in one line, before the effects it caused."""

from __future__ import annotations

import random

import pytest
import torch

from pytest_ckpt import ModuleSubject, StepResult
from pytest_ckpt.checks.diagnose import diagnose_resume
from pytest_ckpt.checks.hidden_state import Capture, Leaf, capture
from pytest_ckpt.checks.roundtrip import check_resume
from pytest_ckpt.errors import ResumeMismatch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)


def resume_failure(subject, stage: str = "TRAINING", tmp_path=None) -> list[str]:
    system = subject.build(grid=(1, 1), stage=stage, seed=0)
    with pytest.raises(ResumeMismatch) as failure:
        check_resume(subject, system, 1, tmp_path / "resume.pt")
    return str(failure.value).splitlines()


# ---- a generator deep inside the system -------------------------------------------------


class Controller:
    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.policy = torch.nn.Linear(4, 3)


class Agent:
    def __init__(self, seed: int) -> None:
        self.controller = Controller(seed)
        self.optimizer = torch.optim.Adam(self.controller.policy.parameters(), lr=1e-2)
        self.updates = 0


class ExplorerSubject:
    """Explores with noise from its controller's generator, which the export leaves out."""

    name = "explorer"
    supports_grids = False

    def stages(self):
        return ("TRAINING",)

    def build(self, *, grid, stage, seed):
        agent = Agent(seed)
        self.step(agent)
        return agent

    def export_state(self, agent):
        return {
            "policy": agent.controller.policy.state_dict(),
            "optimizer": agent.optimizer.state_dict(),
            "updates": agent.updates,
        }

    def rebuild(self, state):
        agent = Agent(0)
        agent.controller.policy.load_state_dict(state["policy"])
        agent.optimizer.load_state_dict(state["optimizer"])
        agent.updates = state["updates"]
        return agent

    def step(self, agent):
        noise = torch.randn(4, generator=agent.controller.generator)
        logits = agent.controller.policy(noise)
        loss = -logits.log_softmax(-1).max()
        agent.optimizer.zero_grad()
        loss.backward()
        agent.optimizer.step()
        agent.updates += 1
        return StepResult({"action": int(logits.argmax()), "loss": float(loss.detach())})


def test_a_generator_left_out_is_named_on_the_first_line(tmp_path) -> None:
    lines = resume_failure(ExplorerSubject(), tmp_path=tmp_path)
    assert lines[0] == (
        "system.controller.generator (a torch.Generator) advanced during the step but its state "
        "is not in export_state(): save generator.get_state()"
    )
    effects = lines.index("resuming from the checkpoint differs from continuing after 1 step(s):")
    assert any("steps[0]['metrics']" in line for line in lines[effects:])


# ---- the global RNGs ----------------------------------------------------------------------


class ForgetsAGlobalRNG(ModuleSubject):
    def __init__(self, key: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.key = key

    def export_state(self, system):
        return {k: v for k, v in super().export_state(system).items() if k != self.key}

    def rebuild(self, state):
        fresh = super().export_state(self._fresh(0))  # the RNG states as they are now
        return super().rebuild({**state, self.key: fresh[self.key]})


def noisy_batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, targets = batch(g)
    return inputs * random.uniform(0.5, 1.5), targets  # augmentation from python's random


@pytest.mark.parametrize(
    ("key", "make_model", "make_batch", "first"),
    [
        (
            "torch_rng",
            lambda: torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(4, 1)),
            batch,
            "the global torch RNG was drawn from during the step but its state is not in "
            "export_state(): save torch.get_rng_state()",
        ),
        (
            "python_rng",
            lambda: torch.nn.Linear(4, 1),
            noisy_batch,
            "python's global random module was drawn from during the step but its state is not "
            "in export_state(): save random.getstate()",
        ),
    ],
    ids=["torch", "python"],
)
def test_a_global_rng_not_captured_is_named(tmp_path, key, make_model, make_batch, first) -> None:
    subject = ForgetsAGlobalRNG(key, make_model=make_model, make_batch=make_batch)
    assert resume_failure(subject, tmp_path=tmp_path)[0].startswith(first)


# ---- learning rate and scheduler position -------------------------------------------------


def decaying(**kwargs) -> ModuleSubject:
    return kwargs.pop("cls", ModuleSubject)(
        lambda: torch.nn.Linear(4, 1),
        make_batch=batch,
        make_optimizer=lambda model: torch.optim.SGD(model.parameters(), lr=0.1),
        make_schedulers=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
        stages={"DECAY": 3},
        **kwargs,
    )


class ResetsTheLearningRate(ModuleSubject):
    """Restores the optimizer's moments but sets lr back to the configured value."""

    def rebuild(self, state):
        system = super().rebuild(state)
        for group in system["optimizer"].param_groups:
            group["lr"] = 0.1
        return system


class ForgetsTheSchedulerPosition(ModuleSubject):
    def rebuild(self, state):
        return super().rebuild({k: v for k, v in state.items() if k != "schedulers"} | {
            "schedulers": [torch.optim.lr_scheduler.StepLR(
                torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), step_size=1
            ).state_dict()]
        })  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "first"),
    [
        (
            ResetsTheLearningRate,
            "system['optimizer'].param_groups[0]['lr'] is 0.0125 in the continued run but 0.1 in "
            "the resumed one: rebuild() does not restore the optimizer's param_groups",
        ),
        (
            ForgetsTheSchedulerPosition,
            "system['schedulers'][0] (a StepLR) is at step 3 in the continued run but 0 in the "
            "resumed one",
        ),
    ],
    ids=["lr", "scheduler"],
)
def test_a_lost_learning_rate_or_scheduler_position_is_named(tmp_path, cls, first) -> None:
    assert resume_failure(decaying(cls=cls), "DECAY", tmp_path)[0].startswith(first)


# ---- a buffer the step changes -------------------------------------------------------------


class SeenCounter(torch.nn.Module):
    """Scales its output by how many training batches it has seen: a buffer left out of the
    state_dict (persistent=False), as running statistics sometimes are."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.register_buffer("seen", torch.zeros(()), persistent=False)

    def forward(self, x):
        if self.training:
            self.seen += 1
        return self.linear(x) / (1 + self.seen)


def test_a_buffer_the_step_changes_but_the_export_leaves_out_is_named(tmp_path) -> None:
    subject = ModuleSubject(SeenCounter, make_batch=batch)
    assert resume_failure(subject, tmp_path=tmp_path)[0] == (
        "system['model'].seen (a buffer of SeenCounter, persistent=False) changed during the "
        "step; it is not in export_state(): register the buffer with persistent=True, or save "
        "it in export_state()"
    )


def test_state_that_is_restored_is_no_cause() -> None:
    """The same system captured twice, with a step in between: nothing differs at the start."""
    subject = ModuleSubject(SeenCounter, make_batch=batch)
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    exported = subject.export_state(system)
    before = capture(system)
    subject.step(system)
    assert diagnose_resume(exported, before, capture(system), before) == []


# ---- a value export_state() holds, brought back as another type ------------------------


def test_a_value_rebuilt_as_another_type_is_said_to_have_changed_type() -> None:
    """A VecNormalize count saved as a float64 and restored as a 0-d array is in the export:
    the cause is its type, not a value export_state() left out."""
    import numpy as np

    path = "system['venv'].obs_rms.count"
    before = Capture({path: Leaf("attribute", 3.0, "float64")})
    after = Capture({path: Leaf("attribute", 4.0, "float64")})
    resumed = Capture({path: Leaf("array", np.array(3.0), "ndarray")})
    [cause] = diagnose_resume({"venv": {"obs_rms": {"count": 3.0}}}, before, after, resumed)
    assert "a a " not in cause
    assert cause == (
        "system['venv'].obs_rms.count changed type: a float64 in the continued run but a 0-d "
        "numpy array (float64) in the resumed one; export_state() holds it at "
        "root['venv']['obs_rms']['count']: rebuild() restores it as another type (convert it "
        "back, e.g. float(...))"
    )


# ---- state the step only overwrites goes last -------------------------------------------


def test_state_equal_in_both_runs_after_the_step_goes_last_said_to_be_overwritten() -> None:
    """A statistic the step reads differs at both ends and comes first; a scratch buffer and
    python's RNG reseeded by the step differ at the start but not at the end: last."""
    scratch, stat = "system.buf_obs", "system.obs_rms.mean"
    leaf = lambda value: Leaf("tensor", torch.tensor([value]), "Tensor")  # noqa: E731
    start, seeded, other = random.getstate(), random.Random(1).getstate(), random.Random(2)
    before = Capture({scratch: leaf(1.0), stat: leaf(1.0)}, {"python": start})
    after = Capture({scratch: leaf(2.0), stat: leaf(1.5)}, {"python": seeded})
    resumed = Capture({scratch: leaf(0.0), stat: leaf(0.0)}, {"python": other.getstate()})
    resumed_after = Capture({scratch: leaf(2.0), stat: leaf(1.0)}, {"python": seeded})
    causes = diagnose_resume({}, before, after, resumed, resumed_after)
    assert [cause.split(" (")[0].split(" differs")[0] for cause in causes] == [
        stat,
        "python's global random module",
        scratch,
    ]
    assert causes[2] == (
        "system.buf_obs (a tensor attribute) differs at the start of the resumed step but is "
        "equal in both runs after it: the step only overwrites it (scratch state), so it is an "
        "unlikely cause"
    )
    without_the_end = diagnose_resume({}, before, after, resumed)
    assert without_the_end[0].startswith("python's global random module was drawn from")


def test_a_value_that_changed_type_is_not_taken_for_overwritten() -> None:
    """A float64 count restored as a 0-d array and equal again after `count += 1`: the step
    read it, so it is still said to have changed type."""
    import numpy as np

    path = "system['venv'].obs_rms.count"
    before = Capture({path: Leaf("attribute", 3.0, "float64")})
    after = Capture({path: Leaf("attribute", 4.0, "float64")})
    resumed = Capture({path: Leaf("array", np.array(3.0), "ndarray")})
    [cause] = diagnose_resume({}, before, after, resumed, after)
    assert cause.startswith(f"{path} changed type")
