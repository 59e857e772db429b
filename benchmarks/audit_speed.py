"""Audit speed and memory against torch's own loader and lister, measured in one run.

    .venv/bin/python benchmarks/audit_speed.py [--gigabytes 1.0] [--repeat 3]
        [--variant clean|dirty|exotic ...]
    .venv/bin/python benchmarks/audit_speed.py --rows [--repeat 3]
    .venv/bin/python benchmarks/audit_speed.py --corpus

`--rows`: ordinary files of 4096 small tensors that also hold one thing each (nothing, a
torch.Size, a torch.device, nn.Parameters instead of tensors, a complex + a bytes + a set;
and a dirty file of 256 tensors + 50 datetime.date), each timed in one process against
torch's lister and torch.load(weights_only=True) (median of `--repeat`, after one warm-up),
with whether the audit ran stage 2 (torch's own unpickler). Targets: audit <= 2x lister and
<= 0.2x load. `--corpus`: what fraction of generated ordinary checkpoints (`ordinary_files`)
still enters stage 2. Both count stage 2 by wrapping the audit's calls into `oracle`.

Builds two checkpoints of about `--gigabytes` each in a temp dir (256 tensors; 4096 tensors)
per variant: `clean` (a state dict of tensors), `dirty` (the same plus one datetime.date at
the end, which torch refuses: the audit must find it), `exotic` (the same plus a torch.Size,
which sends the whole pickle through torch's own unpickler, the audit's second stage)
and reports, each step in a fresh process: `torch.load(weights_only=True)` time,
`torch.serialization.get_unsafe_globals_in_checkpoint` time, `pytest_ckpt.audit.audit_file`
time (modules imported before timing, for all three; for dirty files also the audit plus
its exact `safe_globals` list, which `pytest-ckpt audit` prints and costs one more static
pass), and the peak RSS the audit reaches
above the process's resident size after `import torch` and the auditor's import (Linux: the
peak is reset through /proc/self/clear_refs just before the audit). Targets: audit <= 0.02x
load (256 tensors), <= 0.05x load (4096 tensors), <= 2x torch's lister, <= 50 MB above import
torch.
Not a test: figures go in closing notes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

MEASURE = textwrap.dedent(
    """
    import json, sys, time
    import torch
    from pytest_ckpt.audit import audit_file  # imported up front, as torch is for the others

    def status(field):
        with open("/proc/self/status") as handle:
            return next(int(l.split()[1]) for l in handle if l.startswith(field + ":"))

    what, path = sys.argv[1], sys.argv[2]
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak (VmHWM) to what is resident now
    base = status("VmRSS")
    start = time.perf_counter()
    if what == "load":
        try:
            torch.load(path, weights_only=True)
        except Exception:  # a dirty file: timed up to torch's refusal
            pass
    elif what == "lister":
        torch.serialization.get_unsafe_globals_in_checkpoint(path)
    else:
        report = audit_file(path)
        assert report.loadable == ("dirty" not in path), report
        if what == "exact":  # what `pytest-ckpt audit` prints: the exact allowlist too
            assert report.safe_globals == ([] if report.loadable else ["datetime.date"])
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rss_above_torch_mb": (status("VmHWM") - base) / 1024}))
    """
)


def build(path: Path, tensors: int, total_bytes: int, variant: str) -> None:
    import datetime

    import torch

    numel = total_bytes // 4 // tensors
    state: dict[str, object] = {f"layer{i}.weight": torch.randn(numel) for i in range(tensors)}
    if variant == "dirty":
        state["zz.when"] = datetime.date(2026, 1, 1)
    elif variant == "exotic":
        state["zz.shape"] = torch.Size([2, 3])
    torch.save(state, path)


def measure(what: str, path: Path, repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", MEASURE, what, str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout))
    best = min(runs, key=lambda r: r["seconds"])
    return {"seconds": best["seconds"], "rss": max(r["rss_above_torch_mb"] for r in runs)}


ROW_MEASURE = textwrap.dedent(
    """
    import json, statistics, sys, time
    import torch
    import pytest_ckpt.audit as audit

    stage2 = []  # the audit's calls into torch's unpickler (oracle), counted here
    for name in ("zip_refusal", "legacy_refusal"):
        real = getattr(audit, name)
        def counted(*args, _real=real, **kwargs):
            stage2.append(1)
            return _real(*args, **kwargs)
        setattr(audit, name, counted)

    def load(path):
        try:
            torch.load(path, weights_only=True)
        except Exception:  # a dirty file: timed up to torch's refusal
            pass

    steps = {
        "load": load,
        "lister": torch.serialization.get_unsafe_globals_in_checkpoint,
        "audit": audit.audit_file,
    }
    path, repeat = sys.argv[1], int(sys.argv[2])
    times = {name: [] for name in steps}
    for round in range(repeat + 1):  # round 0 warms up (imports, the allowlist)
        for name, step in steps.items():
            del stage2[:]
            start = time.perf_counter()
            step(path)
            if round:
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(json.dumps({**medians, "stage2": bool(stage2)}))
    """
)


def _row_state(row: str, tensors: int, numel: int) -> dict[str, object]:
    """A state dict of `tensors` small tensors that also holds what `row` names."""
    import datetime

    import torch

    if row == "parameters":
        return {f"layer{i}.weight": torch.nn.Parameter(torch.randn(numel)) for i in range(tensors)}
    state: dict[str, object] = {f"layer{i}.weight": torch.randn(numel) for i in range(tensors)}
    if row == "size":
        state["zz.shape"] = torch.Size([2, 3])
    elif row == "device":
        state["zz.device"] = torch.device("cpu")
    elif row == "complex-bytes-set":
        state.update({"zz.complex": 1 + 2j, "zz.bytes": b"\x00ab", "zz.set": {1, 2, 3}})
    elif row == "dirty":
        state.update({f"zz.when{i}": datetime.date(2026, 1, 1 + i % 28) for i in range(50)})
    return state


ROWS = {  # row -> (tensors, what the row's file also holds)
    "nothing": (4096, "nothing (plain state dict)"),
    "size": (4096, "a torch.Size"),
    "device": (4096, "a torch.device"),
    "parameters": (4096, "nn.Parameters instead of tensors"),
    "complex-bytes-set": (4096, "a complex, a bytes, a set"),
    "dirty": (256, "256 tensors + 50 datetime.date (findings)"),
}


def rows(repeat: int, numel: int = 64) -> None:
    """The ordinary-file rows: audit / lister and audit / load, measured in one process."""
    import torch

    print(f"median of {repeat} in one process per row, {numel} floats per tensor")
    print(f"{'the file also holds':44} {'audit/lister':>12} {'audit/load':>10} {'stage 2':>8}")
    with tempfile.TemporaryDirectory(prefix="audit-rows-") as tmp:
        for row, (tensors, label) in ROWS.items():
            path = Path(tmp, f"{row}.pt")
            torch.save(_row_state(row, tensors, numel), path)
            out = subprocess.run(
                [sys.executable, "-c", ROW_MEASURE, str(path), str(repeat)],
                capture_output=True,
                text=True,
                check=True,
            )
            got = json.loads(out.stdout)
            print(
                f"{label:44} {got['audit'] / got['lister']:11.2f}x "
                f"{got['audit'] / got['load']:9.3f}x {'yes' if got['stage2'] else 'no':>8}"
                f"   (audit {got['audit'] * 1e3:.1f} ms)"
            )


def _trained() -> tuple[Any, dict[str, Any]]:
    """A small model after two Adam steps, and the states projects save around it."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 10), torch.nn.LayerNorm(10),
    )  # fmt: skip
    optimizers = {
        "adam": torch.optim.Adam(net.parameters(), lr=1e-3),
        "adamw": torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01),
        "sgd": torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True),
    }
    scaler = torch.amp.GradScaler("cpu")
    for _ in range(2):
        for optimizer in optimizers.values():
            optimizer.zero_grad()
            net(torch.randn(2, 3, 8, 8)).sum().backward()
            optimizer.step()
    adam = optimizers["adam"]
    schedulers = {
        "steplr": torch.optim.lr_scheduler.StepLR(adam, 2),
        "onecycle": torch.optim.lr_scheduler.OneCycleLR(adam, 0.1, total_steps=10),
        "cosine": torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(adam, 5),
        "lambda": torch.optim.lr_scheduler.LambdaLR(adam, lambda step: 0.9**step),
        "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau(adam),
    }
    states = {f"optimizer-{k}": v.state_dict() for k, v in optimizers.items()}
    states.update({f"scheduler-{k}": v.state_dict() for k, v in schedulers.items()})
    states["scaler"] = scaler.state_dict()
    return net, states


def ordinary_files() -> dict[str, Any]:
    """Checkpoints as projects write them with torch.save (no pickled objects): state dicts,
    optimizer, scheduler and GradScaler states, and Lightning-, HF-Trainer-, timm- and
    accelerate-shaped files built from plain dicts, Parameters, sizes and devices."""
    import collections
    import random

    import torch

    net, states = _trained()
    model = net.state_dict()
    tied = torch.nn.Embedding(50, 8)
    head = torch.nn.Linear(8, 50, bias=False)
    head.weight = tied.weight  # tied weights: one storage, two entries
    rng = {"python": random.getstate(), "cpu": torch.get_rng_state()}
    tagged = torch.nn.Parameter(torch.ones(3))
    tagged._is_sharded = False  # an attribute on a Parameter: _rebuild_parameter_with_state
    files: dict[str, Any] = {
        "state-dict": model,
        "state-dict-half": {k: v.half() for k, v in model.items()},
        "state-dict-tied": {
            **tied.state_dict(),
            **{f"head.{k}": v for k, v in head.state_dict().items()},
        },
        "parameters": dict(net.named_parameters()),
        "frozen-parameters": {
            k: torch.nn.Parameter(v.detach(), requires_grad=False)
            for k, v in net.named_parameters()
        },
        "parameter-with-attribute": {"w": tagged, **model},
        "model-and-optimizer": {"model": model, "optimizer": states["optimizer-adam"], "epoch": 3},
        "shapes-and-devices": {
            "model": model,
            "shapes": {k: v.shape for k, v in model.items()},
            "device": torch.device("cpu"),
            "dtype": torch.float32,
            "amp_dtype": torch.bfloat16,
        },
        "misc-values": {
            "model": model,
            "tags": {"baseline", "v2"},
            "counts": collections.Counter("abca"),
            "blob": b"\x00\x01meta",
            "phase": complex(0.5, 1),
            "ids": bytearray(b"ab"),
        },
        "lightning": {
            "epoch": 3,
            "global_step": 120,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": collections.OrderedDict((f"model.{k}", v) for k, v in model.items()),
            "loops": {
                "fit_loop": {
                    "state_dict": {},
                    "epoch_loop.state_dict": {"_batches_that_stepped": 120},
                    "epoch_progress": {
                        "total": {"ready": 3, "completed": 3},
                        "current": {"ready": 3, "completed": 3},
                    },
                }
            },
            "callbacks": {
                "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
                    "monitor": "val_loss",
                    "best_model_score": torch.tensor(0.25),
                    "best_model_path": "/ckpt/epoch=2.ckpt",
                    "best_k_models": {"/ckpt/epoch=2.ckpt": torch.tensor(0.25)},
                    "dirpath": "/ckpt",
                }
            },
            "optimizer_states": [states["optimizer-adam"]],
            "lr_schedulers": [states["scheduler-steplr"]],
            "hparams_name": "kwargs",
            "hyper_parameters": {"lr": 1e-3, "hidden": 64, "betas": (0.9, 0.999)},
        },
        "hf-pytorch_model.bin": model,
        "hf-optimizer.pt": states["optimizer-adamw"],
        "hf-scheduler.pt": states["scheduler-lambda"],
        "hf-rng_state.pth": rng,
        "timm": {
            "epoch": 10,
            "arch": "resnet18",
            "state_dict": model,
            "optimizer": states["optimizer-sgd"],
            "version": 2,
            "metric": 0.71,
            "state_dict_ema": {k: v.clone() for k, v in model.items()},
        },
        "accelerate-optimizer.bin": states["optimizer-adamw"],
        "accelerate-scheduler.bin": states["scheduler-onecycle"],
        "accelerate-scaler.pt": states["scaler"],
        "accelerate-pytorch_model.bin": model,
    }
    files.update({name: state for name, state in states.items()})
    return files


CORPUS_MEASURE = textwrap.dedent(
    """
    import json, sys
    import pytest_ckpt.audit as audit

    stage2 = []  # the audit's calls into torch's unpickler (oracle), counted here
    for name in ("zip_refusal", "legacy_refusal"):
        real = getattr(audit, name)
        def counted(*args, _real=real, **kwargs):
            stage2.append(1)
            return _real(*args, **kwargs)
        setattr(audit, name, counted)

    result = {}
    for path in sys.argv[1:]:
        del stage2[:]
        report = audit.audit_file(path)
        result[path] = {"loadable": report.loadable, "stage2": bool(stage2)}
    print(json.dumps(result))
    """
)


def corpus() -> None:
    """What fraction of ordinary files still enters stage 2 (each must audit ok)."""
    import torch

    with tempfile.TemporaryDirectory(prefix="audit-corpus-") as tmp:
        paths = {}
        for name, state in ordinary_files().items():
            paths[name] = str(Path(tmp, f"{name}.pt"))
            torch.save(state, paths[name])
            torch.load(paths[name], weights_only=True)  # ordinary: torch loads it
        out = subprocess.run(
            [sys.executable, "-c", CORPUS_MEASURE, *paths.values()],
            capture_output=True,
            text=True,
            check=True,
        )
        got = json.loads(out.stdout)
    entered = [name for name, path in paths.items() if got[path]["stage2"]]
    refused = [name for name, path in paths.items() if not got[path]["loadable"]]
    share = len(entered) / len(paths)
    print(f"ordinary files entering stage 2: {len(entered)} of {len(paths)} ({share:.0%})")
    for name in entered:
        print(f"  stage 2: {name}")
    for name in refused:
        print(f"  NOT OK (the audit refuses a file torch loads): {name}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", action="store_true", help="the ordinary-file rows")
    parser.add_argument("--corpus", action="store_true", help="ordinary files in stage 2")
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--variant",
        action="append",
        choices=["clean", "dirty", "exotic"],
        help="which files to build (repeatable; default: clean and dirty)",
    )
    args = parser.parse_args()
    if args.rows or args.corpus:
        if args.rows:
            rows(args.repeat)
        if args.corpus:
            corpus()
        return
    total = int(args.gigabytes * (1 << 30))
    runs = [(v, t) for v in args.variant or ["clean", "dirty"] for t in (256, 4096)]
    with tempfile.TemporaryDirectory(prefix="audit-speed-") as tmp:
        for variant, tensors in runs:
            path = Path(tmp, f"ckpt-{variant}-{tensors}.pt")
            build(path, tensors, total, variant)
            load = measure("load", path, args.repeat)
            lister = measure("lister", path, args.repeat)
            audit = measure("audit", path, args.repeat)
            exact = measure("exact", path, args.repeat) if variant == "dirty" else None
            size_mb = path.stat().st_size / (1 << 20)
            print(
                f"{variant}, {tensors} tensors, {size_mb:.0f} MB "
                f"(best of {args.repeat}, fresh process each):"
            )
            print(f"  torch.load(weights_only=True)        {load['seconds'] * 1e3:9.1f} ms")
            print(f"  get_unsafe_globals_in_checkpoint     {lister['seconds'] * 1e3:9.1f} ms")
            print(f"  pytest-ckpt audit                    {audit['seconds'] * 1e3:9.1f} ms")
            print(f"  audit / load   = {audit['seconds'] / load['seconds']:.4f}x")
            print(f"  audit / lister = {audit['seconds'] / lister['seconds']:.2f}x")
            print(f"  audit peak RSS above import torch: {audit['rss']:.1f} MB")
            if exact is not None:  # the list costs one more static pass per round
                print(f"  audit + exact safe_globals list    {exact['seconds'] * 1e3:9.1f} ms")
                print(f"  (audit + list) / lister = {exact['seconds'] / lister['seconds']:.2f}x")
            path.unlink()


if __name__ == "__main__":
    main()
