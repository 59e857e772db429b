"""`check_world_size_resume`: does a run saved at SAVE ranks resume exactly at LOAD ranks?

1. SAVE ranks, fresh processes: the subject's distributed system at `stage` (FSDP2, or DDP
   where the subject asks); `dcp.save` of its `state_dict()` (for `ModuleSubject`:
   `get_state_dict`) and, under each rank's own key, that rank's torch and Python RNG
   states and `rank_state()`; then it continues `steps` steps.
2. LOAD ranks, fresh processes: a fresh system (another seed, no step taken: only what the
   checkpoint restores can make it equal, and nothing a restart loses is replayed), filled by
   `dcp.load` through `SafeFileSystemReader` (rank r takes the rank state saved by rank
   r % SAVE), restored with `load_state_dict` (`set_state_dict`), resumed `steps` steps.
3. Each resumed rank r is compared with continued rank r % SAVE, exactly (`torch.equal`, via
   `compare.diff_values`): the RNG and rank states just restored with those saved
   (`restored`), every step's metrics and telemetry (`steps`), then the full parameters and
   optimizer state after the steps (`state`, from `full_state()`: a forgotten scheduler or
   buffer changes no metric, only the final state) and the RNG and rank states
   (`rank_state`). A difference is explained first: each rank's live state is captured at the
   start of its steps, and what differs is named as the single-process diagnosis names it
   (`world_size_diagnosis`).

Under torchrun (a process group already initialised) there are no fresh processes to make:
the first SAVE ranks of the job save and continue in a subgroup, then the first LOAD ranks
build anew and resume in another; every rank compares and raises the same error.
"""

from __future__ import annotations

import datetime
import inspect
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_ckpt.adapters.module import ModuleSubject
from pytest_ckpt.checks.roundtrip import normalize_telemetry
from pytest_ckpt.distributed.launch import RankContext, StartMethod, require_numpy, run_ranks
from pytest_ckpt.distributed.protocol import (
    DistributedSubject,
    DistributedSystem,
    Parallel,
    strategy_of,
)
from pytest_ckpt.distributed.world_size_diagnosis import (
    compare_ranks,
    portable,
    portable_capture,
)
from pytest_ckpt.errors import (
    CheckpointError,
    DistributedRunError,
    SubjectError,
    WorldSizeResumeMismatch,
)
from pytest_ckpt.vocabulary import Grid


@dataclass(slots=True, frozen=True)
class WorldSizeResume:
    """A passing check: what was compared, and how long each phase took (seconds)."""

    save_world_size: int
    load_world_size: int
    steps: int
    checkpoint: Path
    continued: list[list[dict[str, Any]]]  # each SAVE rank's step records
    seconds: dict[str, float]


@dataclass(slots=True, frozen=True)
class _Job:
    subject: Any
    stage: str
    grid: Grid
    seed: int
    steps: int
    save_world_size: int
    load_world_size: int
    checkpoint: str
    strategy: str


def distributed_system(
    subject: Any, *, grid: Grid, stage: str, seed: int, parallel: Parallel, fresh: bool = False
) -> DistributedSystem:
    """The subject's own distributed build if it has one; ModuleSubject's otherwise. `fresh`:
    the system before any step (the LOAD ranks), passed to a `build_distributed` that takes it
    (one that does not is built at `stage`, as before)."""
    if isinstance(subject, DistributedSubject):
        build = subject.build_distributed
        extra = {"fresh": True} if fresh and _takes_fresh(build) else {}
        return build(grid=grid, stage=stage, seed=seed, parallel=parallel, **extra)
    if isinstance(subject, ModuleSubject):
        from pytest_ckpt.distributed.module_system import build_module_system

        return build_module_system(
            subject, grid=grid, stage=stage, seed=seed, parallel=parallel, fresh=fresh
        )
    raise SubjectError(
        f"subject {getattr(subject, 'name', type(subject).__name__)!r} has no "
        "build_distributed(grid=, stage=, seed=, parallel=); see "
        "pytest_ckpt.distributed.protocol (ModuleSubject needs none)"
    )


def _takes_fresh(build: Any) -> bool:
    parameters = inspect.signature(build).parameters.values()
    return any(p.name == "fresh" or p.kind is p.VAR_KEYWORD for p in parameters)


# The LOAD ranks build with another seed: only what the checkpoint restores can then make the
# resumed run equal to the continued one (a same-seed build would reproduce the saved state
# by itself, and a checkpoint that forgot everything would pass).
LOAD_SEED_OFFSET = 1_000_003


def supports_world_size_check(subject: Any) -> bool:
    """Whether `distributed_system` can build this subject (a plugin skips the others)."""
    return isinstance(subject, (DistributedSubject, ModuleSubject))


def _build(context: RankContext, job: _Job, *, seed: int, fresh: bool) -> DistributedSystem:
    parallel = Parallel(job.strategy, context.rank, context.world_size, context.group)
    return distributed_system(
        job.subject, grid=job.grid, stage=job.stage, seed=seed, parallel=parallel, fresh=fresh
    )


def _rank_bundle(system: DistributedSystem) -> dict[str, Any]:
    import torch

    version, internal, gauss = random.getstate()
    return {
        "torch_rng": torch.get_rng_state(),
        "python_rng": [version, list(internal), gauss],
        "state": dict(system.rank_state()),
    }


def _restore_rank_bundle(system: DistributedSystem, bundle: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(bundle["torch_rng"])
    version, internal, gauss = bundle["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    system.load_rank_state(bundle["state"])


def _run_steps(system: DistributedSystem, steps: int) -> list[dict[str, Any]]:
    results = [system.step() for _ in range(steps)]
    return [
        {"metrics": dict(r.metrics), "telemetry": normalize_telemetry(list(r.telemetry))}
        for r in results
    ]


def _copied(value: Any) -> Any:
    """`value` with every tensor cloned: a state read before the steps may share live
    tensors (a generator's state, parameters one rank holds whole), which the steps would
    change under it."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copied(item) for item in value)
    return value


def _outcome(
    system: DistributedSystem, start: dict[str, Any], steps: list[dict[str, Any]]
) -> dict[str, Any]:
    """`start`: the rank's RNG and own state as saved (or as restored); then the steps, and
    the full state and rank state after them. (The full state is gathered once, at the end:
    gathering it at the start too made the check 1.5x a bare save + load.)"""
    return {
        "start": start,
        "steps": steps,
        "full": dict(system.full_state()),
        "rank": _rank_bundle(system),
    }


def save_phase(context: RankContext, job: _Job) -> dict[str, Any]:
    """One SAVE rank: build, save with DCP, continue."""
    import torch.distributed.checkpoint as dcp

    system = _build(context, job, seed=job.seed, fresh=False)
    state = {"app": system.state_dict(), f"rank{context.rank}": _rank_bundle(system)}
    dcp.save(state, checkpoint_id=job.checkpoint, process_group=context.group)
    saved = _copied(_rank_bundle(system))
    before = portable_capture(system)
    outcome = _outcome(system, saved, _run_steps(system, job.steps))
    return {
        **outcome,
        "saved": portable(state),
        "before": before,
        "after": portable_capture(system),
    }


def load_phase(context: RankContext, job: _Job) -> dict[str, Any]:
    """One LOAD rank: build fresh, load through the safe reader, restore, resume."""
    from torch.distributed.checkpoint.api import CheckpointException

    from pytest_ckpt.distributed.safe_reader import load_safely

    system = _build(context, job, seed=job.seed + LOAD_SEED_OFFSET, fresh=True)
    source = f"rank{context.rank % job.save_world_size}"
    template = {"app": system.state_dict(), source: _rank_bundle(system)}
    try:
        load_safely(template, job.checkpoint, process_group=context.group)
        system.load_state_dict(template["app"])
        _restore_rank_bundle(system, template[source])
    except CheckpointError:
        raise
    except (Exception, CheckpointException) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise WorldSizeResumeMismatch(
            f"could not restore the checkpoint saved at {job.save_world_size} rank(s): "
            f"{lines[-1] if lines else type(error).__name__}"
        ) from None
    restored = _copied(_rank_bundle(system))
    resumed = portable_capture(system)
    return {**_outcome(system, restored, _run_steps(system, job.steps)), "resumed": resumed}


def check_world_size_resume(
    subject: Any,
    *,
    stage: str,
    grid: Grid,
    save_world_size: int,
    load_world_size: int,
    steps: int,
    workdir: str | os.PathLike[str],
    seed: int = 0,
    timeout: float = 120.0,
    start_method: StartMethod | None = None,
) -> WorldSizeResume:
    """Save at `save_world_size` ranks, resume at `load_world_size`, compare exactly.

    Raises WorldSizeResumeMismatch (rank, key, first difference; or why the restore failed),
    UnsafeCheckpointError (the saved folder would run code), DistributedRunError (a rank
    raised, died or timed out: `timeout` seconds per phase), SubjectError (no distributed
    build). Needs numpy (torch.distributed's object collectives).
    """
    require_numpy()
    for name, value in (("save_world_size", save_world_size), ("load_world_size", load_world_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    job = _Job(  # (*grid,): a list passed at run time becomes the tuple Grid says
        subject, stage, (*grid,), seed, steps, save_world_size, load_world_size, "",
        strategy_of(subject),
    )  # fmt: skip
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return _under_torchrun(job, Path(workdir), timeout)
    _import_before_fork()
    folder = Path(workdir)
    checkpoint = folder / f"dcp-save{save_world_size}-load{load_world_size}"
    shutil.rmtree(checkpoint, ignore_errors=True)
    job = _with_checkpoint(job, checkpoint)
    seconds: dict[str, float] = {}
    outcomes = []
    phases = (("save", save_world_size, save_phase), ("load", load_world_size, load_phase))
    for name, size, phase in phases:
        started = time.perf_counter()
        label = f"{name} at {size} rank(s)"
        outcome = run_ranks(
            size, phase, job, workdir=folder, phase=label, timeout=timeout,
            start_method=start_method,
        )  # fmt: skip
        outcomes.append(outcome)
        seconds[name] = time.perf_counter() - started
    continued, resumed = outcomes
    compare_ranks(job, continued, resumed, load_seed=job.seed + LOAD_SEED_OFFSET)
    return WorldSizeResume(
        save_world_size, load_world_size, steps, checkpoint, [c["steps"] for c in continued],
        seconds,
    )  # fmt: skip


def _import_before_fork() -> None:
    """What every rank imports (and builds), done once here: forked ranks inherit it (torch's
    distributed modules alone cost each rank ~1 s)."""
    import torch._dynamo
    import torch.distributed.checkpoint
    import torch.distributed.checkpoint.state_dict
    import torch.distributed.fsdp
    import torch.nn.parallel  # noqa: F401

    import pytest_ckpt.distributed.module_system  # noqa: F401
    from pytest_ckpt.audit.formats.dcp.items import warm_up
    from pytest_ckpt.audit.formats.dcp.metadata_allowlist import load_dcp_allowlist

    load_dcp_allowlist()  # cached: each rank's SafeFileSystemReader finds it built
    warm_up()


def _with_checkpoint(job: _Job, checkpoint: Path) -> _Job:
    fields = {name: getattr(job, name) for name in _Job.__slots__}
    return _Job(**{**fields, "checkpoint": os.fspath(checkpoint)})


def _under_torchrun(job: _Job, workdir: Path, timeout: float) -> WorldSizeResume:
    """Both phases in this job's processes, each in a subgroup of its first ranks."""
    import torch
    import torch.distributed as dist

    world, me = dist.get_world_size(), dist.get_rank()
    needed = max(job.save_world_size, job.load_world_size)
    if needed > world:
        raise DistributedRunError(
            f"a {job.save_world_size}:{job.load_world_size} check needs {needed} ranks; this "
            f"job has {world}"
        )
    shared = [os.fspath(workdir)]
    dist.broadcast_object_list(shared, src=0)  # each process may have its own tmp_path
    folder = Path(shared[0])
    checkpoint = folder / f"dcp-save{job.save_world_size}-load{job.load_world_size}"
    job = _with_checkpoint(job, checkpoint)
    limit = datetime.timedelta(seconds=timeout)
    groups = {
        size: dist.group.WORLD
        if size == world
        else dist.new_group(list(range(size)), timeout=limit)
        for size in sorted({job.save_world_size, job.load_world_size})
    }
    if me == 0:
        shutil.rmtree(checkpoint, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    seconds: dict[str, float] = {}
    threads = torch.get_num_threads()
    python_rng = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.set_num_threads(1)
            for name, size, phase in (
                ("save", job.save_world_size, save_phase),
                ("load", job.load_world_size, load_phase),
            ):
                started = time.perf_counter()
                if me < size:
                    _record(
                        folder / f"{name}-rank{me}.pt",
                        phase,
                        RankContext(me, size, groups[size], folder),
                        job,
                    )
                dist.barrier()
                seconds[name] = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
        random.setstate(python_rng)
    continued = [_read(folder / f"save-rank{r}.pt") for r in range(job.save_world_size)]
    resumed = [_read(folder / f"load-rank{r}.pt") for r in range(job.load_world_size)]
    compare_ranks(job, continued, resumed, load_seed=job.seed + LOAD_SEED_OFFSET)
    return WorldSizeResume(
        job.save_world_size, job.load_world_size, job.steps, checkpoint,
        [c["steps"] for c in continued], seconds,
    )  # fmt: skip


def _record(path: Path, phase: Any, context: RankContext, job: _Job) -> None:
    """Run a phase on this rank and leave its outcome (or its error) for every rank."""
    import torch

    try:
        torch.save({"value": phase(context, job)}, path)
    except CheckpointError as error:
        torch.save({"error": str(error), "type": type(error).__name__}, path)
    except BaseException as error:  # DCP's CheckpointException is a BaseException
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        lines = str(error).strip().splitlines() or [""]
        detail = f"{type(error).__name__}: {lines[-1]}"
        torch.save({"error": detail, "type": "DistributedRunError"}, path)


def _read(path: Path) -> dict[str, Any]:
    import torch

    from pytest_ckpt import errors

    outcome = torch.load(path, weights_only=True)
    if "error" in outcome:
        cls = getattr(errors, outcome["type"], DistributedRunError)
        raise cls(f"{path.stem.replace('-', ' ')}: {outcome['error']}")
    return outcome["value"]
