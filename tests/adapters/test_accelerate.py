"""`AccelerateSubject`: accelerate's own `save_state` / `load_state` round trip, continued vs
resumed exactly; what `save_state` leaves out fails resume; `random_states_0.pkl` is named as
a pickle `torch.load(weights_only=True)` refuses (checked against torch in a subprocess).
Runs where accelerate is installed (`pip install -c constraints.txt accelerate`)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

accelerate = pytest.importorskip("accelerate")

from pytest_ckpt.adapters.accelerate import AccelerateSubject, FrameworkFileWarning  # noqa: E402
from pytest_ckpt.adapters.framework_folders import FILES_KEY, REFUSED_KEY  # noqa: E402
from pytest_ckpt.checks.roundtrip import check_resume, check_roundtrip  # noqa: E402
from pytest_ckpt.errors import CheckpointLoadError, ResumeMismatch  # noqa: E402

BATCHES_PER_EPOCH = 6


def data(shuffle: bool = True) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(5)
    dataset = torch.utils.data.TensorDataset(
        torch.randn(4 * BATCHES_PER_EPOCH, 4, generator=g), torch.randn(24, 1, generator=g)
    )
    return torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=shuffle)


def seedable() -> accelerate.Accelerator:
    """The documented way to a reproducible shuffle: a seedable sampler with its own seed."""
    config = accelerate.DataLoaderConfiguration(use_seedable_sampler=True, data_seed=7)
    return accelerate.Accelerator(cpu=True, dataloader_config=config)


def plain() -> accelerate.Accelerator:
    return accelerate.Accelerator(cpu=True)


def net() -> torch.nn.Module:
    """Dropout on: the resumed run must have the global RNGs save_state saved."""
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))


class CountingNet(torch.nn.Module):
    """The planted flaw: the loss is weighted by `samples_seen`, an attribute no state_dict
    holds, so save_state never writes it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = net()
        self.samples_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.samples_seen += len(x)
        return self.net(x) * (1 + self.samples_seen / 100)


def subject(steps: int, *, make_model=net, make_accelerator=seedable, shuffle=True, **kw):
    return AccelerateSubject(
        make_model, make_dataloader=lambda: data(shuffle), make_accelerator=make_accelerator,
        make_scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.9),
        stages={"TRAINING": steps}, **kw,
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("steps", [3, BATCHES_PER_EPOCH], ids=["mid-epoch", "epoch-end"])
def test_save_state_and_load_state_resume_exactly(tmp_path, steps) -> None:
    """Four steps after resuming cross into the next epoch: the shuffle order, the schedule,
    Adam's moments and dropout's RNG all come back from accelerate's own folder."""
    s = subject(steps)
    system = s.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.warns(FrameworkFileWarning):
        state = check_roundtrip(s, system, tmp_path / "a.pt").state
    files = state[FILES_KEY]
    assert sorted(files) == [
        "model.safetensors", "optimizer.bin", "random_states_0.pkl", "scheduler.bin",
    ]  # fmt: skip
    assert files["optimizer.bin"]["state"][0]["step"] == steps
    assert files["scheduler.bin"]["last_epoch"] == steps
    check_resume(s, system, 4, tmp_path / "b.pt")


@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffled", "in-order"])
def test_the_default_loader_resumes_mid_epoch_only_in_order(tmp_path, shuffle) -> None:
    """accelerate's default loader draws a shuffled epoch's order from torch's RNG when the
    epoch starts; save_state keeps no order, so a resumed run reads other batches."""
    s = subject(3, make_accelerator=plain, shuffle=shuffle)
    system = s.build(grid=(1, 1), stage="TRAINING", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrameworkFileWarning)
        if not shuffle:
            check_resume(s, system, 2, tmp_path / "b.pt")
            return
        with pytest.raises(ResumeMismatch, match=r"steps\[0\]\['metrics'\]\['loss'\]"):
            check_resume(s, system, 2, tmp_path / "b.pt")


LOST_ATTRIBUTE = r"^system\['model'\]\.samples_seen = 12 in the continued run but 0 in the resumed"


def test_a_state_only_an_attribute_keeps_fails_resume(tmp_path) -> None:
    s = subject(3, make_model=CountingNet)
    system = s.build(grid=(1, 1), stage="TRAINING", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrameworkFileWarning)
        with pytest.raises(ResumeMismatch, match=LOST_ATTRIBUTE):
            check_resume(s, system, 1, tmp_path / "b.pt")


ORACLE = """
import importlib, sys, torch
path, names = sys.argv[1], sys.argv[2:]
try:
    torch.load(path, weights_only=True)
    print("plain: loaded")
except Exception as err:
    print("plain: refused", type(err).__name__)
def resolve(name):
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)
with torch.serialization.safe_globals([resolve(n) for n in names]):
    print("allowed:", sorted(torch.load(path, weights_only=True)))
"""


def test_random_states_0_pkl_is_named_as_refused_with_its_objects_and_fix(tmp_path) -> None:
    """strict=True: the plain weights_only verdict fails the check, naming the file, the
    object (numpy's RNG key array) and the fix; torch agrees (in a subprocess), and the
    safe_globals the message names load the file."""
    s = subject(2, strict=True)
    system = s.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.raises(CheckpointLoadError) as refused:
        s.export_state(system)
    head, *items = str(refused.value).splitlines()
    assert head.startswith("random_states_0.pkl: refused by torch.load(weights_only=True) (")
    assert "accelerate's load_state loads it with its own allowlist" in head
    assert any("['numpy_random_seed'][1]" in i and "Fix: store" in i for i in items), items
    names = items[-1].split("safe_globals([", 1)[1].split("])", 1)[0].split(", ")
    system["loop"]().accelerator.save_state(tmp_path / "state")
    oracle = subprocess.run(
        [sys.executable, "-c", ORACLE, str(tmp_path / "state" / "random_states_0.pkl"), *names],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert oracle.stdout.splitlines() == [
        "plain: refused UnpicklingError",
        "allowed: ['numpy_random_seed', 'random_state', 'step', 'torch_manual_seed']",
    ], oracle.stderr


def test_by_default_the_refusal_is_kept_in_the_export_and_warned_once(tmp_path) -> None:
    s = subject(2)
    system = s.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.warns(FrameworkFileWarning, match=r"numpy_random_seed.*Fix") as caught:
        first, second = s.export_state(system), s.export_state(system)
    assert len(caught) == 1
    assert list(first[REFUSED_KEY]) == list(second[REFUSED_KEY]) == ["random_states_0.pkl"]
    assert isinstance(first[FILES_KEY]["random_states_0.pkl"], bytes)  # never unpickled here


def test_the_forward_probe_runs_on_the_first_batch_of_a_fresh_loader() -> None:
    """AccelerateSubject's batch source once shadowed ModuleSubject's probe batch with another
    signature, so `probe` raised TypeError (mypy's override check found it)."""
    s = subject(2)
    system = s.build(grid=(1, 1), stage="TRAINING", seed=0)
    first = s.probe(system)
    assert isinstance(first, torch.Tensor) and first.shape == (4, 1)
    assert torch.equal(first, s.probe(system))
