from __future__ import annotations

import re

import pytest
import torch

from pytest_ckpt.reference import train
from pytest_ckpt.reference.trainer import Trainer


def test_train_save_then_resume(tmp_path, capsys) -> None:
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    args = ["--host", "transformer", "--slots", "r0c0,r0c1,r1c0", "--epochs", "2"]
    assert train.main([*args, "--save", str(first)]) == 0
    assert train.main(["--resume", str(first), "--epochs", "1", "--save", str(second)]) == 0
    out = capsys.readouterr().out
    assert "saved TrainingState at update 2" in out and "update    3" in out
    resumed = Trainer.load(second)
    assert resumed.update == 3 and resumed.slots.slot_ids == ("r0c0", "r0c1", "r1c0")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slots", "early,r0c1"], "legacy slot name 'early'.*'r0c0'"),
        (["--slots", "R0C0"], "canonical form"),
        (["--epochs", "0"], "positive integer"),
    ],
)
def test_bad_arguments_are_usage_errors(args, message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train.main(args)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("content", [b"", b"garbage", None, "truncated", "model-only"])
def test_unreadable_resume_files_exit_2_with_one_line(content, tmp_path, capsys) -> None:
    path = tmp_path / "bad.pt"
    if content == "truncated":
        Trainer(host="transformer", slots=train.SlotConfig.grid(1, 1)).save(tmp_path / "ok.pt")
        path.write_bytes((tmp_path / "ok.pt").read_bytes()[:2000])
    elif content == "model-only":
        torch.save({"weights": torch.zeros(2)}, path)
    elif content is not None:
        path.write_bytes(content)
    assert train.main(["--resume", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot resume: ") and err.count("\n") == 1
    assert "Traceback" not in err


def run_cli(*runs: list[str]) -> None:
    """The train CLI in fresh processes, as a user runs it (independent runs in parallel)."""
    import subprocess
    import sys

    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "pytest_ckpt.reference.train", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in runs
    ]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err


@pytest.mark.slow  # 14 s: two training processes; test_ppo_resume covers exact resume in one
def test_runs_in_separate_processes_write_equal_states_and_resume_exactly(tmp_path) -> None:
    from pytest_ckpt.checks.compare import diff_values

    def load(name: str):
        return torch.load(tmp_path / name, weights_only=True)

    run = ["--host", "cnn", "--slots", "r0c0,r0c1", "--seed", "3"]
    run_cli(
        [*run, "--epochs", "1", "--save", str(tmp_path / "a.pt")],
        [*run, "--epochs", "1", "--save", str(tmp_path / "b.pt")],
        [*run, "--epochs", "2", "--save", str(tmp_path / "straight.pt")],
    )
    assert diff_values(load("a.pt"), load("b.pt"), limit=5) == []  # every tensor and primitive
    run_cli(["--resume", str(tmp_path / "a.pt"), "--epochs", "1", "--save", str(tmp_path / "r.pt")])
    assert diff_values(load("straight.pt"), load("r.pt"), limit=5) == []
