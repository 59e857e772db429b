"""The launcher: N forked ranks on gloo/127.0.0.1; the first rank to fail is the one named;
nothing outlives a call."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest
import torch

from pytest_ckpt.distributed.launch import run_ranks
from pytest_ckpt.errors import DistributedRunError, UnsafeCheckpointError


def _sum_ranks(context, payload):
    import torch.distributed as dist

    value = torch.tensor([context.rank + payload])
    dist.all_reduce(value, group=context.group)
    return {"rank": context.rank, "sum": value, "pid": os.getpid()}


def _rank_1_fails(context, payload):
    import torch.distributed as dist

    if context.rank == 1:
        raise payload
    dist.barrier()  # rank 0 loses its peer here: not the cause
    return None


def _rank_1_dies(context, payload):
    if context.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)


def test_values_come_back_in_rank_order_and_the_failing_rank_is_named(tmp_path) -> None:
    values = run_ranks(2, _sum_ranks, 10.0, workdir=tmp_path)
    assert [v["rank"] for v in values] == [0, 1]
    assert all(torch.equal(v["sum"], torch.tensor([21.0])) for v in values)
    with pytest.raises(DistributedRunError, match=r"^rank 1 \(run\): ValueError: boom$"):
        run_ranks(2, _rank_1_fails, ValueError("boom"), workdir=tmp_path)
    with pytest.raises(UnsafeCheckpointError, match=r"^rank 1 \(run\): refused$"):
        run_ranks(2, _rank_1_fails, UnsafeCheckpointError("refused"), workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # stores and result files cleaned up


@pytest.mark.slow
def test_a_killed_rank_and_a_timeout_end_the_run_with_no_process_left(tmp_path) -> None:
    with pytest.raises(DistributedRunError, match=r"rank 1 \(run\) died .*signal 9"):
        run_ranks(2, _rank_1_dies, workdir=tmp_path, timeout=30)
    started = time.monotonic()
    with pytest.raises(DistributedRunError, match=r"rank 0 \(run\) timed out after 1 s"):
        run_ranks(2, _sleep, workdir=tmp_path, timeout=1)
    assert time.monotonic() - started < 10
    assert multiprocessing.active_children() == []


def _sleep(context, payload):
    time.sleep(60)
