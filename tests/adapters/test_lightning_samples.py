"""LightningSubject(make_loader=...): every step reports the dataset indices it read, and the
loader resumes as Lightning resumes it. A plain DataLoader resumed mid-epoch (the most common
Lightning resume bug) reads the epoch's first batches again: resume fails with the data order
first. An epoch-end checkpoint, or a stateful loader Lightning restores, passes. Adapter and
native mode give the same verdicts (native is Lightning itself). Runs where lightning is
installed."""

from __future__ import annotations

import pytest
import torch

L = pytest.importorskip("lightning.pytorch")

from torch.utils.data import DataLoader, DistributedSampler  # noqa: E402

from pytest_ckpt.adapters.lightning import LightningSubject  # noqa: E402
from pytest_ckpt.checks.roundtrip import check_resume, check_roundtrip  # noqa: E402
from pytest_ckpt.errors import ResumeMismatch, SubjectError  # noqa: E402
from tests.support.lightning_data import Points, Regressor  # noqa: E402

# The user's project: a sequential DataLoader of 3 batches an epoch; checkpoints at an epoch's
# end (EPOCH_END, 3 steps) and one batch into the next epoch (MID_EPOCH, 4 steps).
LOADER_SUBJECT = """
import os

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader, Dataset

from pytest_ckpt.adapters.lightning import LightningSubject


class Points(Dataset):
    def __init__(self):
        self.x = torch.linspace(-1, 1, 36).reshape(12, 3)

    def __len__(self):
        return 12

    def __getitem__(self, index):
        return self.x[index], self.x[index].sum(dim=0, keepdim=True)


class Regressor(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(3, 1)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def make():
    return LightningSubject(
        Regressor,
        make_loader=lambda generator: DataLoader(Points(), batch_size=4),
        stages={"EPOCH_END": 3, "MID_EPOCH": 4},
        native=os.environ.get("LIT_NATIVE") == "1",
    )
"""


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run_project(pytester: pytest.Pytester, native: bool) -> pytest.RunResult:
    pytester.syspathinsert()
    pytester.makepyfile(lit_subject=LOADER_SUBJECT)
    if native:
        pytester._monkeypatch.setenv("LIT_NATIVE", "1")
    return pytester.runpytest_subprocess(
        "--ckpt-roundtrip", "--ckpt-subject=lit_subject:make", "--ckpt-resume-steps=2",
        "-k", "resume", "-p", "no:cacheprovider",
    )  # fmt: skip


def _assert_mid_epoch_fails_with_the_samples_first(result: pytest.RunResult) -> None:
    result.assert_outcomes(passed=1, failed=1, deselected=4)
    result.stdout.re_match_lines(
        [
            r"ResumeMismatch: data order: 4 samples read twice, 4 never "
            r"read over 2 step\(s\) after the checkpoint \(first read twice: 0, first never "
            r"read: 8\); Lightning restarts a plain DataLoader's epoch when it resumes "
            r"mid-epoch.*",
            r"FAILED ckpt::resume\[MID_EPOCH\].*",
        ]
    )
    failed = [line for line in result.outlines if line.startswith("FAILED")]
    assert len(failed) == 1  # resume[EPOCH_END] passed
    assert result.ret == 1


def test_a_plain_loader_resumed_mid_epoch_fails_with_the_samples(pytester) -> None:
    _assert_mid_epoch_fails_with_the_samples_first(_run_project(pytester, native=False))


@pytest.mark.slow  # one Trainer.fit per step in a fresh pytest process (~10 s on 2 cores)
def test_native_mode_fails_the_same_mid_epoch_resume(pytester) -> None:
    _assert_mid_epoch_fails_with_the_samples_first(_run_project(pytester, native=True))


def _loader(kind: str):
    """Plain sequential; plain shuffled by the generator; DistributedSampler (Lightning calls
    its set_epoch); torchdata's StatefulDataLoader (Lightning saves and restores it)."""

    def make_loader(generator):
        if kind == "sequential":
            return DataLoader(Points(), batch_size=4)
        if kind == "shuffled":
            return DataLoader(Points(), batch_size=4, shuffle=True, generator=generator)
        if kind == "set_epoch":
            sampler = DistributedSampler(Points(), num_replicas=1, rank=0, shuffle=True, seed=7)
            return DataLoader(Points(), batch_size=4, sampler=sampler)
        stateful = pytest.importorskip("torchdata.stateful_dataloader")
        return stateful.StatefulDataLoader(
            Points(), batch_size=4, shuffle=True, generator=generator
        )

    return make_loader


# (loader, steps to the checkpoint, resumed steps) -> the verdict, measured under Lightning
# 2.6.6's own fit and ckpt_path resume (native mode) and required of both modes.
VERDICTS = [
    ("sequential", 3, 3, None),  # an epoch-end checkpoint: the next epoch starts afresh
    ("sequential", 4, 1, "4 samples read twice, 4 never read"),  # the classic bug
    ("set_epoch", 3, 3, None),  # a per-epoch shuffle Lightning sets: the right order
    ("set_epoch", 4, 1, "4 samples read twice, 4 never read"),
    ("shuffled", 3, 3, "the same samples in another order"),  # the generator is not saved
    ("stateful", 4, 1, None),  # restored from loops.fit_loop.state_dict.combined_loader
    ("stateful", 4, 3, "2 samples read twice, 2 never read"),  # its next epoch: a fresh generator
]


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("native", [False, True], ids=["adapter", "native"])
@pytest.mark.parametrize(("kind", "at", "steps", "verdict"), VERDICTS)
def test_the_data_order_verdict_is_lightnings(kind, at, steps, verdict, native, tmp_path) -> None:
    subject = LightningSubject(
        Regressor, make_loader=_loader(kind), stages={"TRAINING": at}, native=native
    )
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    check_roundtrip(subject, system, tmp_path / "a.ckpt")
    if verdict is None:
        records = check_resume(subject, system, steps, tmp_path / "b.ckpt")
        assert [len(record["samples"]) for record in records] == [4] * steps
        return
    with pytest.raises(ResumeMismatch, match=rf"^data order: .*{verdict}"):
        check_resume(subject, system, steps, tmp_path / "b.ckpt")


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")
def test_the_adapter_keeps_a_stateful_loader_where_lightning_does(tmp_path) -> None:
    subject = LightningSubject(Regressor, make_loader=_loader("stateful"), stages={"T": 4})
    system = subject.build(grid=(1, 1), stage="T", seed=0)
    state = check_roundtrip(subject, system, tmp_path / "a.ckpt").state
    kept = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert kept["_num_yielded"] == 1  # one batch into the second epoch


def test_steps_per_epoch_must_agree_with_the_loader() -> None:
    subject = LightningSubject(
        Regressor, make_loader=_loader("sequential"), steps_per_epoch=2, stages={"T": 1}
    )
    with pytest.raises(SubjectError, match=r"steps_per_epoch=2 but make_loader\(\) gave 3"):
        subject.build(grid=(1, 1), stage="T", seed=0)


@pytest.mark.slow  # two worker processes per fit, one fit per step (~6 s on 2 cores)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_native_ids_stay_with_their_batches_with_workers(tmp_path) -> None:
    """Lightning makes and drops an iterator to check the loader iterates; with workers it
    has drawn the indices of its prefetched batches, which must not be taken for the first
    batches' ids (they were: 'the same samples in another order')."""

    def make_loader(generator):
        return DataLoader(Points(), batch_size=4, num_workers=2)

    subject = LightningSubject(
        Regressor, make_loader=make_loader, stages={"TRAINING": 4}, native=True
    )
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.raises(ResumeMismatch, match=r"^data order: 4 samples read twice, 4 never read"):
        check_resume(subject, system, 3, tmp_path / "b.ckpt")
