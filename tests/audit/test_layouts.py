"""`pytest-ckpt audit FOLDER`: every checkpoint-like file gets its verdict (held against
torch.load(weights_only=True)), known framework layouts are named, other files are skipped
or checked as JSON, a total closes the folder, and the walk neither follows symlinks out,
nor opens a FIFO, nor runs unbounded."""

from __future__ import annotations

import enum
import json
import os
import random
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pytest_ckpt.audit.allowlist import load_allowlist
from pytest_ckpt.audit.formats import walk as layouts
from pytest_ckpt.audit.formats.walk import folder_layout, walk_folder
from pytest_ckpt.audit.render import artifact_uri
from pytest_ckpt.cli import main
from tests.audit.conftest import torch_verdicts
from tests.audit.test_safetensors import safetensors_bytes
from tests.forked_runs import run_python

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")


class IntervalStrategy(enum.Enum):
    """Stands in for transformers' IntervalStrategy inside a pickled TrainingArguments."""

    STEPS = "steps"


class TrainingArguments:
    def __init__(self) -> None:
        self.output_dir = "runs"
        self.save_strategy = IntervalStrategy.STEPS
        self.learning_rate = 5e-5


def _trained() -> tuple[torch.nn.Module, torch.optim.Optimizer, object]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def _numpy_rng() -> dict[str, object]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.get_rng_state(),
    }


def write_run_folder(root: Path, outside: Path) -> Path:
    """What a training run leaves behind: an HF Trainer checkpoint, an accelerate
    save_state, a Lightning .ckpt, a DCP folder, and the usual other files."""
    import torch.distributed.checkpoint as dcp

    model, optimizer, scheduler = _trained()
    safetensors = safetensors_bytes({"weight": ("F32", [2, 3]), "bias": ("F32", [2])})
    hf = root / "checkpoint-500"
    hf.mkdir(parents=True)
    torch.save(TrainingArguments(), hf / "training_args.bin")
    torch.save(optimizer.state_dict(), hf / "optimizer.pt")
    torch.save(scheduler.state_dict(), hf / "scheduler.pt")
    torch.save(_numpy_rng(), hf / "rng_state.pth")
    (hf / "model.safetensors").write_bytes(safetensors)
    (hf / "trainer_state.json").write_text(json.dumps({"global_step": 500, "log_history": []}))
    (hf / "config.json").write_text("{}")
    accel = root / "accelerate" / "checkpoint_0"
    accel.mkdir(parents=True)
    (accel / "model.safetensors").write_bytes(safetensors)
    torch.save(optimizer.state_dict(), accel / "optimizer.bin")
    torch.save(scheduler.state_dict(), accel / "scheduler.bin")
    torch.save(_numpy_rng(), accel / "random_states_0.pkl")
    lightning = root / "lightning"
    lightning.mkdir()
    torch.save(
        {
            "state_dict": model.state_dict(),
            "pytorch-lightning_version": "2.4.0",
            "hyper_parameters": {"lr": 0.01},
        },
        lightning / "epoch=1-step=10.ckpt",
    )
    with warnings.catch_warnings():  # "assuming the intent is to save in a single process"
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({"model": model.state_dict(), "step": 3}, checkpoint_id=str(root / "dcp"))
    (root / "README.md").write_text("# run\n")
    os.mkfifo(root / "events.fifo")
    torch.save({"w": torch.zeros(1)}, root / "odd\nname.pt")
    outside.mkdir(exist_ok=True)
    torch.save({"when": __import__("datetime").date(2026, 1, 1)}, outside / "evil.pt")
    (root / "link-out.pt").symlink_to(outside / "evil.pt")
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "link-in.pt").symlink_to(hf / "optimizer.pt")
    return root


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("layouts")
    return write_run_folder(work / "runs", work / "outside")


def test_a_folder_gets_a_verdict_per_file_named_layouts_and_a_total(run_folder) -> None:
    result = run_python(
        [sys.executable, "-m", "pytest_ckpt.cli", "audit", str(run_folder)],
        capture_output=True,
        text=True,
        timeout=120,  # a FIFO opened for reading would block forever
    )
    out, root = result.stdout, str(run_folder)
    # the 3 files with findings are read by their frameworks' loaders (2) or never (1)
    assert result.returncode == 0, out + result.stderr
    assert "Traceback" not in result.stderr
    lines = out.splitlines()
    hf = lines.index(f"{root}/checkpoint-500/: HF Trainer checkpoint")
    assert lines[hf + 1].startswith(f"{root}/checkpoint-500/config.json: ok (json")
    assert lines[hf + 2] == "  note: in an HF Trainer checkpoint"
    assert f"{root}/accelerate/checkpoint_0/: accelerate save_state" in lines
    dcp = [i for i, line in enumerate(lines) if line.startswith(f"{root}/dcp: ok (dcp, ")]
    assert len(dcp) == 1 and lines[dcp[0] + 1] == "  note: DCP folder"
    ckpt = lines.index(
        f"{root}/lightning/epoch=1-step=10.ckpt: ok (zip, 2 storages): loads with weights_only=True"
    )
    assert lines[ckpt + 1] == "  note: Lightning checkpoint"
    assert f"{root}/checkpoint-500/training_args.bin: 2 finding(s) (zip)" in lines
    assert any(line.startswith(f"{root}/checkpoint-500/rng_state.pth: ") for line in lines)
    assert any(
        line.startswith(f"{root}/checkpoint-500/model.safetensors: ok (safetensors")
        for line in lines
    )
    assert (
        f"{root}/checkpoint-500/trainer_state.json: ok (json, valid JSON, not a checkpoint: "
        "nothing in it runs)" in lines
    )
    assert f"{root}/README.md: skipped: not checkpoint-like" in lines
    assert (
        f"{root}/events.fifo: skipped: not a regular file (a FIFO, socket or device): not opened"
        in lines
    )
    assert f"{root}/link-out.pt: skipped: a symlink out of the folder: not followed" in lines
    assert f"{root}/loop: skipped: a symlink to something other than a file: not followed" in lines
    assert any(line.startswith(f"{root}/link-in.pt: ok (zip") for line in lines)
    assert any(line.startswith(f"{root}/odd\\nname.pt: ok (zip") for line in lines)
    assert "outside" not in out and "evil" not in out
    assert lines[-1] == (
        f"total: 19 file(s) in {root}: 12 ok, 3 with findings, 0 unreadable, 4 skipped; of those "
        "with findings, 2 load with their framework's allowlist, 1 not read on resume: they pass "
        "(--strict fails them)"
    )


def test_folder_verdicts_agree_with_torch_load(run_folder) -> None:
    target = walk_folder(str(run_folder), load_allowlist())
    ours = {
        report.path: report.loadable
        for report in target.reports
        if report.path.endswith(PICKLE_SUFFIXES) and report.format != layouts.SKIPPED
    }
    assert len(ours) == 10
    assert torch_verdicts([Path(p) for p in ours]) == ours


def test_json_and_sarif_include_every_file_and_parse(run_folder, capsys) -> None:
    walked = {r.path for r in walk_folder(str(run_folder), load_allowlist()).reports}
    assert main(["audit", "--json", str(run_folder)]) == 0
    reports = json.loads(capsys.readouterr().out)["files"]
    assert {r["path"] for r in reports} == walked and len(reports) == len(walked)
    skipped = {r["path"] for r in reports if r["format"] == "skipped"}
    assert f"{run_folder}/events.fifo" in skipped
    # a file listed but not audited carries no verdict, never "loadable": true
    assert {r["loadable"] for r in reports if r["format"] == "skipped"} == {None}
    by_path = {r["path"]: r for r in reports}
    assert by_path[f"{run_folder}/checkpoint-500/training_args.bin"]["notes"] == [
        "in an HF Trainer checkpoint"
    ]
    assert by_path[f"{run_folder}/dcp"]["notes"] == ["DCP folder"]
    assert main(["audit", "--sarif", str(run_folder)]) == 0
    sarif = json.loads(capsys.readouterr().out)
    artifacts = sarif["runs"][0]["artifacts"]
    assert {a["location"]["uri"] for a in artifacts} == {artifact_uri(p) for p in walked}
    verdicts = [a["properties"]["verdict"] for a in artifacts]
    assert (verdicts.count("findings"), verdicts.count("skipped")) == (3, 4)
    assert {
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        for r in sarif["runs"][0]["results"]
    } == {
        artifact_uri(f"{run_folder}/checkpoint-500/training_args.bin"),
        artifact_uri(f"{run_folder}/checkpoint-500/rng_state.pth"),
        artifact_uri(f"{run_folder}/accelerate/checkpoint_0/random_states_0.pkl"),
    }


def test_the_exit_status_is_the_worst_of_the_files(tmp_path, capsys) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    torch.save({"w": torch.zeros(2)}, folder / "a.pt")
    (folder / "notes.txt").write_text("not a checkpoint")
    assert main(["audit", str(folder)]) == 0
    torch.save({"h": __import__("collections").deque([1])}, folder / "b.pt")
    assert main(["audit", str(folder)]) == 1
    (folder / "trainer_state.json").write_text("{broken")
    assert main(["audit", str(folder)]) == 2
    out, err = capsys.readouterr()
    assert (
        out.splitlines()[-1]
        == f"total: 4 file(s) in {folder}: 1 ok, 1 with findings, 1 unreadable, 1 skipped"
    )
    assert err.splitlines()[-1].startswith(
        f"pytest-ckpt audit: {folder}/trainer_state.json: not valid JSON"
    )


def test_files_are_audited_by_their_first_bytes_not_only_their_names(tmp_path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    when = {"when": __import__("datetime").date(2026, 1, 1)}
    torch.save(when, folder / "state")
    torch.save(when, folder / "model.safetensors")  # a pickle in disguise
    (folder / "tokenizer.model").write_bytes(b"\x0a\x05hello")
    with zipfile.ZipFile(folder / "dataset.zip", "w") as archive:
        archive.writestr("images/0.png", b"\x89PNG")
    reports = {Path(r.path).name: r for r in walk_folder(str(folder), load_allowlist()).reports}
    assert reports["state"].findings
    disguised = reports["model.safetensors"]
    assert disguised.format == "zip" and disguised.findings
    assert "named .safetensors but it is not one: audited as a pickle" in disguised.notes
    assert reports["tokenizer.model"].format == "skipped"
    assert reports["dataset.zip"].format == "skipped"


def test_the_walk_is_bounded_in_depth_and_entries(tmp_path, monkeypatch) -> None:
    deep = tmp_path.joinpath(*["d"] * (layouts.MAX_DEPTH + 3))
    deep.mkdir(parents=True)
    torch.save({"w": torch.zeros(1)}, deep / "lost.pt")
    target = walk_folder(str(tmp_path), load_allowlist())
    assert [r.error for r in target.reports] == [
        f"deeper than {layouts.MAX_DEPTH} folders: not audited"
    ]
    many = tmp_path / "many"
    many.mkdir()
    for i in range(8):
        (many / f"{i}.txt").write_text("x")
    monkeypatch.setattr(layouts, "MAX_ENTRIES", 5)
    target = walk_folder(str(many), load_allowlist())
    assert len(target.reports) == 6 and [r.format for r in target.reports[:5]] == ["skipped"] * 5
    assert target.reports[-1].error == "over 5 entries: the walk stopped, the rest is not audited"
    assert target.reports[-1].path == str(many)


def test_a_fifo_given_as_an_argument_is_unreadable_not_a_hang(tmp_path) -> None:
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    result = run_python(
        [sys.executable, "-m", "pytest_ckpt.cli", "audit", str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"pytest-ckpt audit: {fifo}: not a regular file (a FIFO): refusing to read it"
    )


@pytest.mark.parametrize(
    ("name", "files", "layout"),
    [
        ("checkpoint-500", ["trainer_state.json", "model.safetensors"], "HF Trainer checkpoint"),
        (
            "last",
            ["trainer_state.json", "optimizer.pt", "rng_state_3.pth"],
            "HF Trainer checkpoint",
        ),
        ("checkpoint-500", ["model.safetensors"], None),
        ("ckpt", ["random_states_0.pkl", "optimizer.bin"], "accelerate save_state"),
        ("ckpt", ["optimizer.bin", "model.safetensors"], None),
    ],
)
def test_layouts_are_told_by_their_file_names(name, files, layout) -> None:
    assert folder_layout(name, files) == layout


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("suffix", [".json", ".pt", ".safetensors", ".bin", ".zip", ".metadata"])
def test_a_file_that_fails_when_read_is_one_line_not_a_traceback(tmp_path, suffix) -> None:
    """/proc/self/mem opens and then fails every read at offset 0 (EIO): as a disk error
    would, past the probe, in whichever format's reader it reaches."""
    link = tmp_path / f"mem{suffix}"
    link.symlink_to("/proc/self/mem")
    result = run_python(
        [sys.executable, "-m", "pytest_ckpt.cli", "audit", str(link)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"pytest-ckpt audit: {link}: "), line
