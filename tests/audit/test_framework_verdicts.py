"""Files in a folder a framework wrote get the verdict of the loader that framework reads
them with on resume, beside plain torch.load(weights_only=True); that verdict decides the
exit status unless --strict. Each "loads"/"refuses" is held against torch.load inside the
framework's own safe_globals list, in a fresh process, on files laid out and filled as the
frameworks write them (transformers 5.25, accelerate 1.16, timm 1.0.31, SB3 2.9)."""

from __future__ import annotations

import argparse
import collections
import enum
import importlib.util
import json
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pytest_ckpt.audit.allowlist import load_allowlist
from pytest_ckpt.audit.formats import framework_loaders as loaders
from pytest_ckpt.audit.formats.walk import folder_layout, walk_folder
from pytest_ckpt.cli import main
from tests.audit.test_safetensors import safetensors_bytes
from tests.forked_runs import run_python

FRAMEWORK_LOAD = """
import importlib, json, sys, warnings
import torch
warnings.simplefilter("ignore")

def resolve(name):
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)

verdicts = {}
for path, names in json.loads(sys.argv[1]).items():
    try:
        with torch.serialization.safe_globals([resolve(n) for n in names]):
            torch.load(path, weights_only=True, map_location="cpu")
        verdicts[path] = True
    except Exception:  # the verdict is all we want
        verdicts[path] = False
print(json.dumps(verdicts))
"""


class IntervalStrategy(enum.Enum):
    """Stands in for transformers' IntervalStrategy inside a pickled TrainingArguments."""

    STEPS = "steps"


class TrainingArguments:
    def __init__(self) -> None:
        self.output_dir = "runs"
        self.save_strategy = IntervalStrategy.STEPS


class VecNormalize:
    """What SB3's VecNormalize.save pickles: the wrapper itself, statistics in numpy."""

    def __init__(self) -> None:
        self.obs_rms = {"mean": np.zeros(3), "var": np.ones(3), "count": 1e-4}
        self.clip_obs = 10.0


def _trained() -> tuple[torch.nn.Module, torch.optim.Optimizer, object]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def write_framework_folders(root: Path) -> Path:
    """An HF Trainer checkpoint, an accelerate save_state, a timm output folder and an SB3
    VecNormalize file, with the file names and contents each framework writes."""
    model, optimizer, scheduler = _trained()
    weights = safetensors_bytes({"weight": ("F32", [2, 3]), "bias": ("F32", [2])})
    hf = root / "hf" / "checkpoint-500"
    hf.mkdir(parents=True)
    torch.save(TrainingArguments(), hf / "training_args.bin")  # Trainer._save
    torch.save(optimizer.state_dict(), hf / "optimizer.pt")
    torch.save(scheduler.state_dict(), hf / "scheduler.pt")
    torch.save(  # Trainer._save_rng_state on a CPU host
        {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.get_rng_state()},
        hf / "rng_state.pth",
    )
    (hf / "model.safetensors").write_bytes(weights)
    (hf / "trainer_state.json").write_text(json.dumps({"global_step": 500}))
    accel = root / "accelerate" / "checkpoints" / "checkpoint_0"
    accel.mkdir(parents=True)
    (accel / "model.safetensors").write_bytes(weights)
    torch.save(optimizer.state_dict(), accel / "optimizer.bin")
    torch.save(scheduler.state_dict(), accel / "scheduler.bin")
    torch.save({"step": 3}, accel / "custom_checkpoint_0.pkl")  # register_for_checkpointing
    torch.save(  # checkpointing.save_accelerator_state on a CPU host
        {
            "step": 3,
            "random_state": random.getstate(),
            "numpy_random_seed": np.random.get_state(),
            "torch_manual_seed": torch.get_rng_state(),
        },
        accel / "random_states_0.pkl",
    )
    timm = root / "timm" / "20260101-resnet"
    timm.mkdir(parents=True)
    args = argparse.Namespace(model="resnet18", lr=0.1, sched="onecycle", amp=True, crop=None)
    state = {  # CheckpointSaver._save
        "epoch": 1,
        "arch": "resnet18",
        "args": args,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "version": 2,
        "metric": 0.5,
        "saver": {"checkpoint_files": [], "best_metric": 0.5, "pending": (1, 0.5)},
    }
    torch.save(state, timm / "last.pth.tar")
    torch.save({**state, "args": argparse.Namespace(history=collections.deque([1]))},
               timm / "checkpoint-1.pth.tar")  # fmt: skip
    (timm / "args.yaml").write_text("model: resnet18\n")
    sb3 = root / "sb3"
    sb3.mkdir()
    with open(sb3 / "vec_normalize.pkl", "wb") as handle:
        pickle.dump(VecNormalize(), handle)
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_framework_folders(tmp_path_factory.mktemp("frameworks") / "runs")


def _audit(args: list[str]) -> subprocess.CompletedProcess[str]:
    return run_python(
        [sys.executable, "-m", "pytest_ckpt.cli", "audit", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_framework_verdicts_agree_with_the_frameworks_own_loader(folders) -> None:
    target = walk_folder(str(folders), load_allowlist())
    judged = {
        path: verdict
        for path, verdict in target.framework.items()
        if verdict.reader.how == loaders.ALLOWLIST
    }
    names = {Path(p).name for p in judged}
    assert names == {
        "rng_state.pth", "optimizer.bin", "scheduler.bin", "random_states_0.pkl",
        "last.pth.tar", "checkpoint-1.pth.tar",
    }  # fmt: skip
    lists = {path: list(v.allowlist.names) for path, v in judged.items() if v.allowlist}
    result = subprocess.run(
        [sys.executable, "-c", FRAMEWORK_LOAD, json.dumps(lists)],
        capture_output=True,
        text=True,
        check=True,
    )
    torch_says = json.loads(result.stdout)
    ours = {path: verdict.verdict == loaders.LOADS for path, verdict in judged.items()}
    assert ours == torch_says
    assert not ours[str(folders / "timm" / "20260101-resnet" / "checkpoint-1.pth.tar")]
    assert ours[str(folders / "hf" / "checkpoint-500" / "rng_state.pth")]


def test_a_trainer_checkpoint_passes_by_its_loader_and_says_both_verdicts(folders) -> None:
    hf = folders / "hf"
    result = _audit([str(hf)])
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    rng = lines.index(f"{hf}/checkpoint-500/rng_state.pth: 1 finding(s) (zip)")
    verdict = next(line for line in lines[rng:] if line.startswith("  framework: "))
    assert verdict.startswith(
        "  framework: ok for transformers' Trainer (Trainer._load_rng_state; its allowlist: "
        "numpy._core.multiarray._reconstruct, numpy.ndarray, numpy.dtype, "
        "numpy.dtypes.UInt32DType; reviewed against transformers 5.25.0); plain "
        "weights_only=True refuses it (above): --strict fails on it"
    )
    assert (
        "  framework: not read by transformers' Trainer on resume (Trainer writes it with "
        "torch.save(self.args) and never loads it on resume); plain weights_only=True refuses "
        "it (above): --strict fails on it" in lines
    )
    assert lines[-1].endswith(
        "4 ok, 2 with findings, 0 unreadable, 0 skipped; of those with findings, 1 load with "
        "their framework's allowlist, 1 not read on resume: they pass (--strict fails them)"
    )
    assert main(["audit", "--strict", str(hf)]) == 1


def test_a_file_given_alone_is_judged_by_its_folders_layout(folders) -> None:
    """A pre-commit hook passes the changed files, not their folder."""
    rng = folders / "hf" / "checkpoint-500" / "rng_state.pth"
    result = _audit([str(rng)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "  framework: ok for transformers' Trainer (" in result.stdout
    alone = folders.parent / "rng_state.pth"
    alone.write_bytes(rng.read_bytes())  # the same bytes outside a Trainer folder
    assert main(["audit", str(alone)]) == 1


def test_refused_by_accelerate_too_says_load_state_swallows_it(tmp_path) -> None:
    folder = tmp_path / "checkpoint_0"
    folder.mkdir()
    torch.save({"step": 1, "queue": collections.deque([1])}, folder / "random_states_0.pkl")
    result = _audit([str(folder)])
    assert result.returncode == 1
    assert "  framework: accelerate's load_state refuses it too (" in result.stdout
    assert (
        "  framework note: load_state catches this failure and resumes without restoring these "
        "RNG states (logged only at info level)" in result.stdout
    )


def test_pickles_their_framework_reads_with_pickle_load_run_code_and_always_fail(
    folders, capsys
) -> None:
    assert main(["audit", str(folders / "sb3")]) == 1
    out = capsys.readouterr().out
    assert (
        f"{folders}/sb3/vec_normalize.pkl: anything in it runs when stable-baselines3 reads it "
        "(VecNormalize.load (pickle.load)): no allowlist applies" in out
    )
    assert "tests.audit.test_framework_verdicts.VecNormalize" in out
    assert "weights_only" not in out and "safe_globals" not in out
    custom = folders / "accelerate" / "checkpoints" / "checkpoint_0" / "custom_checkpoint_0.pkl"
    assert main(["audit", "--json", str(custom)]) == 1  # torch-safe contents, read unsafely
    (entry,) = json.loads(capsys.readouterr().out)["files"]
    assert entry["loadable"] is True and entry["verdict"] == "runs code when its framework reads it"
    assert entry["framework"]["call"] == "load_custom_state (torch.load, weights_only=False)"


def test_json_carries_layouts_framework_verdicts_and_totals(folders, capsys) -> None:
    assert main(["audit", "--json", str(folders)]) == 1  # the SB3 pickle and timm's deque
    report = json.loads(capsys.readouterr().out)
    layouts = {Path(d["folder"]).name: d["layout"] for d in report["targets"][0]["layouts"]}
    assert layouts == {
        "checkpoint-500": "HF Trainer checkpoint",
        "checkpoint_0": "accelerate save_state",
        "20260101-resnet": "timm CheckpointSaver folder",
    }
    by_name = {Path(f["path"]).name: f for f in report["files"]}
    assert by_name["rng_state.pth"]["layout"] == "HF Trainer checkpoint"
    assert by_name["rng_state.pth"]["framework"]["verdict"] == "loads"
    assert by_name["rng_state.pth"]["fails"] is False
    assert by_name["checkpoint-1.pth.tar"]["framework"]["allowlist"] == ["argparse.Namespace"]
    assert report["total"] == report["targets"][0]["total"]
    assert report["total"] == {
        "files": 15,
        "ok": 11,
        "refused": 3,
        "unreadable": 0,
        "skipped": 1,
        "by_verdict": {
            "not read on resume": 1,
            "ok": 7,
            "ok for its framework's loader": 3,
            "refused": 1,
            "runs code when its framework reads it": 2,
            "skipped": 1,
        },
    }
    assert main(["audit", "--json", "--strict", str(folders)]) == 1
    strict = json.loads(capsys.readouterr().out)
    assert strict["strict"] is True and strict["total"]["refused"] == 7


def test_names_from_the_file_and_the_folder_are_escaped(tmp_path, capsys) -> None:
    folder = tmp_path / "odd\nrun\x1b[2J" / "sb3"
    folder.mkdir(parents=True)
    # a protocol-2 pickle whose one GLOBAL carries an escape sequence in its module name
    (folder / "vec_normalize.pkl").write_bytes(b"\x80\x02cevil\x1b[31mmod\nName\n)\x81.")
    hf = folder.parent / "checkpoint-7"
    hf.mkdir()
    (hf / "trainer_state.json").write_text("{}")
    torch.save(TrainingArguments(), hf / "training_args.bin")
    assert main(["audit", str(folder.parent)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "odd\\nrun\\x1b[2J" in out
    assert "evil\\x1b[31mmod.Name" in out
    assert "odd\\nrun\\x1b[2J/checkpoint-7/: HF Trainer checkpoint" in out


@pytest.mark.parametrize(
    ("name", "files", "layout"),
    [
        ("20260101-resnet", ["last.pth.tar", "args.yaml"], "timm CheckpointSaver folder"),
        ("out", ["model_best.pth.tar", "recovery-3-100.pth.tar"], "timm CheckpointSaver folder"),
        ("out", ["last.pth"], None),
    ],
)
def test_timm_folders_are_told_by_their_file_names(name, files, layout) -> None:
    assert folder_layout(name, files) == layout


@pytest.mark.parametrize("framework", ["transformers", "accelerate"])
def test_the_installed_frameworks_list_is_the_reviewed_one(framework) -> None:
    """Where the framework is installed its own list is used; a difference from the
    reviewed list means a new release to review."""
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    installed = loaders.framework_allowlist(framework)
    assert installed.source.startswith(f"read from the installed {framework} ")
    assert sorted(installed.names) == sorted(loaders.reviewed_names(framework))


def test_without_the_framework_the_reviewed_list_is_used_and_said(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    loaders.framework_allowlist.cache_clear()
    try:
        used = loaders.framework_allowlist("accelerate")
    finally:
        loaders.framework_allowlist.cache_clear()
    assert used.source == "reviewed against accelerate 1.16.0"
    assert "_codecs.encode" in used.names


def _sarif_results(out: str) -> dict[str, list[dict]]:
    """SARIF results by file name."""
    run = json.loads(out)["runs"][0]
    by_name: dict[str, list[dict]] = {}
    for result in run["results"]:
        uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        by_name.setdefault(uri.rsplit("/", 1)[-1], []).append(result)
    return by_name


def test_sarif_levels_follow_the_verdict_that_sets_the_exit_status(folders, capsys) -> None:
    """Code scanning shows what the exit status says: a file its framework's loader reads is
    a warning (plain weights_only refuses it), an error under --strict; a file its framework
    reads with pickle.load is an error even where torch would load it."""
    assert main(["audit", "--sarif", str(folders)]) == 1
    sarif = capsys.readouterr().out
    results = _sarif_results(sarif)
    rng = results["rng_state.pth"]
    assert {r["level"] for r in rng} == {"warning"}
    assert {r["properties"]["frameworkVerdict"] for r in rng} == {"ok for its framework's loader"}
    assert {r["level"] for r in results["training_args.bin"]} == {"warning"}
    custom = results["custom_checkpoint_0.pkl"]
    assert [(r["ruleId"], r["level"]) for r in custom] == [("runs-code-when-read", "error")]
    assert "load_custom_state (torch.load, weights_only=False)" in custom[0]["message"]["text"]
    vec = results["vec_normalize.pkl"]
    assert {r["level"] for r in vec} == {"error"}
    assert "runs-code-when-read" in {r["ruleId"] for r in vec}
    assert {r["level"] for r in results["checkpoint-1.pth.tar"]} == {"error"}  # timm refuses
    artifacts = {
        a["location"]["uri"].rsplit("/", 1)[-1]: a["properties"]
        for a in json.loads(sarif)["runs"][0]["artifacts"]
    }
    assert artifacts["rng_state.pth"]["verdict"] == "findings"  # plain weights_only=True
    assert artifacts["rng_state.pth"]["frameworkVerdict"] == "ok for its framework's loader"
    assert artifacts["custom_checkpoint_0.pkl"]["frameworkVerdict"] == (
        "runs code when its framework reads it"
    )
    assert "frameworkVerdict" not in artifacts["trainer_state.json"]

    assert main(["audit", "--sarif", "--strict", str(folders)]) == 1
    strict = _sarif_results(capsys.readouterr().out)
    assert {r["level"] for r in strict["rng_state.pth"]} == {"error"}


def test_a_folder_that_passes_has_no_sarif_error(folders, capsys) -> None:
    assert main(["audit", "--sarif", str(folders / "hf")]) == 0
    results = [r for rs in _sarif_results(capsys.readouterr().out).values() for r in rs]
    assert results and {r["level"] for r in results} == {"warning"}
