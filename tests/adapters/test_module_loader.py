"""ModuleSubject(make_loader=...): a real DataLoader's position is saved and restored, and
every step reports the indices it read, so the resume check proves the data order."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from pytest_ckpt import ModuleSubject
from pytest_ckpt.checks.roundtrip import check_resume, check_roundtrip
from pytest_ckpt.errors import ResumeMismatch


class Augmented(Dataset):
    """12 samples, each with fresh noise from the global RNG (a worker's, with workers)."""

    def __init__(self) -> None:
        self.x = torch.arange(36, dtype=torch.float32).reshape(12, 3) / 36

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int):
        x = self.x[index] + 0.01 * torch.rand(3)
        return x, x.sum(dim=0, keepdim=True)


def _subject(workers: int = 0, *, shuffle_generator: bool = True, **kwargs) -> ModuleSubject:
    def make_loader(generator):
        return DataLoader(
            Augmented(),
            batch_size=4,
            shuffle=True,
            num_workers=workers,
            generator=generator if shuffle_generator else None,
        )

    return ModuleSubject(
        lambda: torch.nn.Linear(3, 1),
        make_loader=make_loader,
        stages={"WARMUP": 2, "LATER": 4},
        **kwargs,
    )


def _resumed_ok(subject, stage: str, steps: int, tmp_path) -> list[dict]:
    system = subject.build(grid=(1, 1), stage=stage, seed=0)
    check_roundtrip(subject, system, tmp_path / f"{stage}-a.pt")
    return check_resume(subject, system, steps, tmp_path / f"{stage}-b.pt")


@pytest.mark.parametrize("stage", ["WARMUP", "LATER"])
def test_a_saved_loader_position_resumes_across_the_epoch_end(stage, tmp_path) -> None:
    records = _resumed_ok(_subject(), stage, 4, tmp_path)
    read = [i for record in records for i in record["samples"]]
    assert len(read) == 16 and all(isinstance(i, int) for i in read)
    assert sorted(read[:4]) != sorted(read[4:8])  # batches, not one repeated


def test_the_position_resumes_with_two_workers(tmp_path) -> None:
    _resumed_ok(_subject(workers=2), "WARMUP", 3, tmp_path)


def test_a_loader_without_a_generator_resumes_from_the_global_rng(tmp_path) -> None:
    _resumed_ok(_subject(shuffle_generator=False), "WARMUP", 3, tmp_path)


class _PositionForgotten(ModuleSubject):
    """The classic bug: the loader is rebuilt fresh, its position not restored."""

    def rebuild(self, state):
        return super().rebuild(
            {k: v for k, v in state.items() if k != "loader"}
            | {"loader": {"epoch": 0, "batches": 0}}
        )


def test_a_forgotten_loader_position_fails_with_the_samples(tmp_path) -> None:
    def make_loader(generator):
        return DataLoader(Augmented(), batch_size=4, shuffle=True, generator=generator)

    subject = _PositionForgotten(lambda: torch.nn.Linear(3, 1), make_loader=make_loader)
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.raises(ResumeMismatch, match=r"^data order: 4 samples read twice, 4 never read"):
        check_resume(subject, system, 1, tmp_path / "a.pt")


def test_one_source_of_batches() -> None:
    with pytest.raises(ValueError, match="make_batch\\(generator\\) or make_loader"):
        ModuleSubject(lambda: torch.nn.Linear(3, 1))


class Plain(Augmented):
    def __getitem__(self, index: int):
        return self.x[index], self.x[index].sum(dim=0, keepdim=True)


def _stateful_subject(dataset: Dataset, workers: int) -> ModuleSubject:
    stateful = pytest.importorskip("torchdata.stateful_dataloader")

    def make_loader(generator):
        return stateful.StatefulDataLoader(
            dataset, batch_size=4, shuffle=True, num_workers=workers, generator=generator
        )

    return ModuleSubject(lambda: torch.nn.Linear(3, 1), make_loader=make_loader)


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")
@pytest.mark.parametrize(("workers", "dataset"), [(0, Augmented()), (2, Plain())])
def test_a_stateful_dataloader_state_is_saved_and_restored(workers, dataset, tmp_path) -> None:
    records = _resumed_ok(_stateful_subject(dataset, workers), "TRAINING", 3, tmp_path)
    assert all(len(record["samples"]) == 4 for record in records)


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")
def test_stateful_dataloader_workers_do_not_resume_their_augmentation_rng(tmp_path) -> None:
    """Measured, torchdata 0.11: its state_dict restores the sampler but not the workers'
    RNG streams, so augmentations drawn in workers differ after a resume: the right
    samples (no data order line), other values."""
    subject = _stateful_subject(Augmented(), 2)
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.raises(ResumeMismatch) as caught:
        check_resume(subject, system, 2, tmp_path / "a.pt")
    assert "data order" not in str(caught.value)
    assert "steps[0]['metrics']['loss']" in str(caught.value)
