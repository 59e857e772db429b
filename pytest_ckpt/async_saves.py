"""Non-blocking saves for `CheckpointManager`: a snapshot now, the durable write later.

`save(..., blocking=False)` copies the state to CPU before it returns (so the training loop
may mutate its tensors at once), then writes it on the manager's one save thread through the
same atomic path as a blocking save: bytes, sidecar, renames, and only then `keep_last`. A
process killed at any point leaves what a killed blocking save leaves: `latest()` never offers
an incomplete checkpoint, and pruning never runs before the new checkpoint is complete.

Saves are *ordered*, never refused: one manager has one save thread, and a save (blocking or
not) started while another is in flight is written after it, in call order. Two managers (or
two processes) on one directory are not ordered with each other.

DCP folders go through `dcp.async_save`, which stages the state to CPU before it returns; the
save thread waits for its future, then rank 0 records the files, renames the folder into
place and writes the sidecar: `DcpFolders.begin` and `DcpFolders.finish`, which
`DcpFolders.save` runs around `dcp.save`.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Generic, TypeVar

from pytest_ckpt.errors import CheckpointError

Result = TypeVar("Result")


class PendingSave(Generic[Result]):
    """A save in flight. `wait()` returns what the save returns (a `CheckpointInfo`, or a DCP
    folder's path) or raises its `CheckpointError`; `done()` asks without waiting."""

    def __init__(self, future: Future[Result], what: str) -> None:
        self._future = future
        self.what = what

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> Result:
        """Block until the save is durable; raises TimeoutError if `timeout` passes first."""
        return self._future.result(timeout)

    def __repr__(self) -> str:
        return f"<PendingSave {self.what} {'done' if self.done() else 'in flight'}>"


class SaveQueue:
    """One save thread per manager: saves run one at a time, in the order they were asked.
    The thread is not a daemon: a process that exits normally finishes its saves first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, job: Callable[[], Result], what: str) -> PendingSave[Result]:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="pytest-ckpt-save")
            return PendingSave(self._executor.submit(job), what)

    def drain(self) -> None:
        """Wait for every save asked so far (their errors stay with their handles)."""
        with self._lock:
            executor = self._executor
        if executor is not None:
            executor.submit(lambda: None).result()

    def run(self, job: Callable[[], Result], what: str) -> Result:
        """A blocking save: after every save asked before it, on the caller's behalf."""
        with self._lock:
            idle = self._executor is None
        return job() if idle else self.submit(job, what).wait()


def snapshot_to_cpu(state: Any) -> Any:
    """A copy of `state` that shares no memory with it: tensors copied to CPU (detached),
    containers rebuilt, other values deep-copied. Raises CheckpointError for an object
    whose copy fails, naming where it is."""
    import torch

    def copy_of(value: Any, where: str) -> Any:
        if isinstance(value, torch.Tensor):
            return value.detach().to("cpu", copy=True)
        if isinstance(value, dict):
            items = [(key, copy_of(item, f"{where}[{key!r}]")) for key, item in value.items()]
            rebuilt = copy.copy(value)  # keeps the mapping's type (OrderedDict, ...)
            rebuilt.clear()
            rebuilt.update(items)
            return rebuilt
        if isinstance(value, list):
            return [copy_of(item, f"{where}[{index}]") for index, item in enumerate(value)]
        if type(value) is tuple:
            return tuple(copy_of(item, f"{where}[{index}]") for index, item in enumerate(value))
        try:
            return copy.deepcopy(value)
        except Exception as err:  # whatever the object's own __deepcopy__ raised
            raise CheckpointError(
                f"{where}: cannot snapshot for a non-blocking save: {err}"
            ) from err

    return copy_of(state, "state")


def start_dcp_save(
    folders: Any, state: dict[str, Any], step: int, process_group: Any, world_size: int
) -> Callable[[], Path]:
    """Begin an async DCP save of `state` as `folders.path_for(step)`; returns the job that
    finishes it (wait for the shards, then rank 0 makes it a checkpoint)."""
    import torch.distributed.checkpoint as dcp

    from pytest_ckpt.distributed.folders import rank_in

    rank = rank_in(process_group)
    final, temporary = folders.begin(step, rank)
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier(group=process_group)
    response = dcp.async_save(state, checkpoint_id=temporary, process_group=process_group)
    # An AsyncSaveResponse (torch >= 2.8) comes back only for an asynchronous stager; we pass
    # none, but take its upload future if one does.
    future = response if isinstance(response, Future) else response.upload_completion

    def finish() -> Path:
        future.result()
        if rank == 0:
            folders.finish(temporary, final, step, world_size, saved_by="dcp.async_save ended")
        return final

    return finish
