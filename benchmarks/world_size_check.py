"""The world-size check against a bare DCP save + load at the same world sizes, in one run.

    .venv/bin/python benchmarks/world_size_check.py [--hidden 256] [--repeat 5]

For each SAVE:LOAD pair, times (median of `--repeat`, alternating) in this process:
- baseline: SAVE forked ranks build a `ModuleSubject` MLP sharded with FSDP2 (its warm-up
  steps included) and `dcp.save` its `get_state_dict`; then LOAD forked ranks build it and
  `dcp.load` + `set_state_dict` it: what a hand-written resharding test does, on the same
  launcher;
- the check: `check_world_size_resume(..., steps=1)` (continue and resume one step, full
  state gathers, RNG and rank states, the safe reader, the comparison).
Target: check <= 1.3x baseline. Forked ranks inherit this process's imports (done once,
before timing, for both). Not a test: figures go in closing notes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from pytest_ckpt import ModuleSubject
from pytest_ckpt.distributed import world_size
from pytest_ckpt.distributed.launch import run_ranks
from pytest_ckpt.distributed.module_system import ModuleSubjectSystem
from pytest_ckpt.distributed.protocol import Parallel


def make_subject(hidden: int) -> ModuleSubject:
    def model() -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Linear(32, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(), torch.nn.Linear(hidden, 1),
        )  # fmt: skip

    def batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(16, 32, generator=generator), torch.randn(16, 1, generator=generator)

    return ModuleSubject(model, make_batch=batch, name=f"mlp-{hidden}")


def _system(context, subject):
    parallel = Parallel("fsdp2", context.rank, context.world_size, context.group)
    return ModuleSubjectSystem(subject, parallel, seed=0)


def bare_save(context, payload) -> None:
    import torch.distributed.checkpoint as dcp

    subject, folder = payload
    dcp.save(
        _system(context, subject).state_dict(), checkpoint_id=folder, process_group=context.group
    )


def bare_load(context, payload) -> None:
    import torch.distributed.checkpoint as dcp

    subject, folder = payload
    system = _system(context, subject)
    state = system.state_dict()
    dcp.load(state, checkpoint_id=folder, process_group=context.group)
    system.load_state_dict(state)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    world_size._import_before_fork()
    subject = make_subject(args.hidden)
    params = sum(p.numel() for p in subject.make_model().parameters())
    print(f"MLP with {params} parameters ({params * 4 / 1e6:.1f} MB), FSDP2, gloo, forked ranks")
    with tempfile.TemporaryDirectory(prefix="world-size-bench-") as tmp:
        for save, load in ((2, 1), (1, 2), (2, 2)):
            bare, check = [], []
            for i in range(args.repeat):
                work = Path(tmp, f"{save}-{load}-{i}")
                folder = str(work / "bare")
                started = time.perf_counter()
                run_ranks(save, bare_save, (subject, folder), workdir=work, phase="save")
                run_ranks(load, bare_load, (subject, folder), workdir=work, phase="load")
                bare.append(time.perf_counter() - started)
                started = time.perf_counter()
                world_size.check_world_size_resume(
                    subject, stage="TRAINING", grid=(1, 1), save_world_size=save,
                    load_world_size=load, steps=1, workdir=work / "check",
                )  # fmt: skip
                check.append(time.perf_counter() - started)
            b, c = statistics.median(bare), statistics.median(check)
            print(
                f"  {save}:{load}  bare save+load {b * 1e3:7.0f} ms   check {c * 1e3:7.0f} ms   "
                f"check / bare = {c / b:.2f}x   (median of {args.repeat})"
            )


if __name__ == "__main__":
    main()
