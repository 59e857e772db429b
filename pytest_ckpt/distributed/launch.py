"""Run a function on N local ranks: gloo on CPU, 127.0.0.1 only, bounded and cleaned up.

Each rank is a fresh process that has never run distributed code. On POSIX they are forked
from the caller by default: a fork costs milliseconds where a spawned process pays torch's
import (10-20 s on two busy cores), and a subject built from lambdas needs no pickling.
`start_method="spawn"` is there for callers whose target and payload pickle.

The ranks meet through a `FileStore` in the work folder (no port to pick, nothing left
listening) and gloo binds the loopback interface. A rank returns primitives and tensors,
handed back through a `torch.save` file read with `weights_only=True`. The first rank to
fail (an exception, a signal, the timeout) ends the run: the others are killed, by pid, and
the error names the rank.
"""

from __future__ import annotations

import datetime
import importlib.util
import multiprocessing
import os
import signal
import socket
import time
import traceback
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pytest_ckpt import errors
from pytest_ckpt.errors import CheckpointError, DistributedRunError

if TYPE_CHECKING:
    from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext

_GRACE_S = 2.0  # how long the other ranks get to report after one fails, before SIGKILL
_POLL_S = 0.02
# multiprocessing's start methods (on Windows, spawn only).
StartMethod = Literal["fork", "spawn", "forkserver"]


@dataclass(slots=True, frozen=True)
class RankContext:
    """Where a rank runs: its rank and world size in `group` (the world of a fresh run, or a
    subgroup of torchrun's), and the work folder every rank of the run shares."""

    rank: int
    world_size: int
    group: Any
    workdir: Path


def require_numpy() -> None:
    """torch.distributed's object collectives (used by DCP) call `.numpy()`."""
    if importlib.util.find_spec("numpy") is None:
        raise DistributedRunError(
            "numpy is not installed; torch.distributed's object collectives (DCP uses them) "
            "need it: pip install 'pytest-ckpt[distributed]'"
        )


def loopback_interface() -> str | None:
    """The name of the loopback interface (lo, lo0), for GLOO_SOCKET_IFNAME."""
    names = [name for _index, name in socket.if_nameindex()]
    return next((name for name in names if name.startswith("lo")), None)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}".rstrip(": ")


def _rank_main(
    rank: int,
    world_size: int,
    store: str,
    target: Callable,
    payload: Any,
    out: str,
    timeout_s: float,
) -> None:
    import torch
    import torch.distributed as dist

    interface = loopback_interface()
    if interface is not None:
        os.environ["GLOO_SOCKET_IFNAME"] = interface
    torch.set_num_threads(1)  # results must not depend on the core count
    timeout = datetime.timedelta(seconds=timeout_s)
    code = 0
    try:
        dist.init_process_group(
            "gloo", init_method=f"file://{store}", rank=rank, world_size=world_size,
            timeout=timeout,
        )  # fmt: skip
        context = RankContext(rank, world_size, dist.group.WORLD, Path(out).parent)
        result: dict[str, Any] = {"value": target(context, payload)}
    except BaseException as error:  # reported to the parent, which raises it
        result = {
            "error": str(error) if isinstance(error, CheckpointError) else _first_line(error),
            "type": type(error).__name__,
            "traceback": traceback.format_exc()[-4000:],
            "at": time.time(),  # the first rank to fail is the cause; its peers lose a pair
        }
        code = 1
    torch.save(result, out + ".tmp")
    os.replace(out + ".tmp", out)
    if dist.is_initialized():
        dist.destroy_process_group()
    os._exit(code)  # no atexit handlers of the caller (a forked pytest) in the child


def _kill(processes: list[Any]) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGKILL)
    for process in processes:
        process.join(5)


def _raise_for(rank: int, phase: str, outcome: dict[str, Any] | None, exitcode: Any) -> None:
    where = f"rank {rank} ({phase})"
    if outcome is None:
        how = f"killed by signal {-exitcode}" if exitcode and exitcode < 0 else f"exit {exitcode}"
        raise DistributedRunError(f"{where} died without a result ({how})")
    cls = getattr(errors, outcome["type"], None)
    if not (isinstance(cls, type) and issubclass(cls, CheckpointError)):
        cls = DistributedRunError
    raise cls(f"{where}: {outcome['error']}")


def _context(method: StartMethod) -> ForkContext | SpawnContext | ForkServerContext:
    """multiprocessing's context for `method`, typed as the concrete context it is (typeshed
    types `get_context(str)` as BaseContext, which has no `Process`)."""
    if method == "fork":
        return multiprocessing.get_context("fork")
    if method == "forkserver":
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context(method)


def run_ranks(
    world_size: int,
    target: Callable[[RankContext, Any], Any],
    payload: Any = None,
    *,
    workdir: str | os.PathLike[str],
    phase: str = "run",
    timeout: float = 120.0,
    start_method: StartMethod | None = None,
) -> list[Any]:
    """`target(context, payload)` on `world_size` fresh ranks; their return values in rank
    order. Raises the rank's own CheckpointError, or DistributedRunError naming the rank for
    any other exception, a death or the timeout; no process outlives the call."""
    import torch

    require_numpy()
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    default: StartMethod = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = _context(start_method or default)
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{phase}-{uuid.uuid4().hex[:8]}"
    store = os.fspath(folder / f".store-{tag}")
    outs = [os.fspath(folder / f".rank{rank}-{tag}.pt") for rank in range(world_size)]
    processes = [
        context.Process(
            target=_rank_main,
            args=(rank, world_size, store, target, payload, outs[rank], timeout),
            name=f"pytest-ckpt-{phase}-rank{rank}",
        )
        for rank in range(world_size)
    ]
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns on fork in a threaded process
            warnings.simplefilter("ignore", DeprecationWarning)
            for process in processes:
                process.start()
        deadline = time.monotonic() + timeout
        failed: int | None = None
        while any(p.is_alive() for p in processes):
            failed = next((r for r, p in enumerate(processes) if p.exitcode not in (None, 0)), None)
            if failed is not None or time.monotonic() > deadline:
                break
            time.sleep(_POLL_S)
        if failed is not None:  # the others are likely blocked in a collective with it
            end = time.monotonic() + _GRACE_S
            while any(p.is_alive() for p in processes) and time.monotonic() < end:
                time.sleep(_POLL_S)
        running = [r for r, p in enumerate(processes) if p.is_alive()]
        _kill(processes)
        outcomes = [
            torch.load(out, weights_only=True) if os.path.exists(out) else None for out in outs
        ]
        errored = [(o["at"], r) for r, o in enumerate(outcomes) if o is not None and "error" in o]
        if errored:
            rank = min(errored)[1]
            _raise_for(rank, phase, outcomes[rank], processes[rank].exitcode)
        if failed is not None and outcomes[failed] is None:  # killed, or exited early
            _raise_for(failed, phase, None, processes[failed].exitcode)
        if running:
            raise DistributedRunError(
                f"rank {running[0]} ({phase}) timed out after {timeout:.0f} s (killed)"
            )
        for rank, (process, outcome) in enumerate(zip(processes, outcomes, strict=True)):
            if outcome is None:
                _raise_for(rank, phase, None, process.exitcode)
        return [outcome["value"] for outcome in outcomes]  # type: ignore[index]
    finally:
        _kill(processes)
        for path in [store, *outs]:
            Path(path).unlink(missing_ok=True)
