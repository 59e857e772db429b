"""Why a resume at another world size differs: the single-process diagnosis, across ranks.

Each SAVE rank captures its live system (`checks.hidden_state.capture`) at the start of the
continued steps and after them; each LOAD rank at the start of the resumed steps. Captures
travel back from the rank processes as `torch.save` files read with `weights_only=True`, so
`portable` turns them into primitives and tensors first (numpy arrays become tensors on both
sides alike; a DTensor is its local shard; anything else is named by its type). Parameters
and optimizer state are left out: their shards differ in shape from one world size to another,
and the final `state` comparison names them. The parent
then asks `checks.diagnose.diagnose_resume` what differs, with what the SAVE rank saved as the
"export".
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from pytest_ckpt.checks.compare import diff_values
from pytest_ckpt.checks.diagnose import diagnose_resume
from pytest_ckpt.checks.hidden_state import Capture, Leaf, capture
from pytest_ckpt.errors import WorldSizeResumeMismatch

_SHOWN = 5
_SHARDED = ("parameter", "optimizer state")
_PRIMITIVES = (bool, int, float, complex, str, bytes, type(None))


def portable(value: Any) -> Any:
    """`value` as primitives and tensors (copies), for a weights_only round trip."""
    import torch
    from torch.distributed.tensor import DTensor

    numpy = sys.modules.get("numpy")
    if isinstance(value, DTensor):
        return value.to_local().detach().clone()
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if numpy is not None and isinstance(value, numpy.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(numpy.array(value))
    if numpy is not None and isinstance(value, numpy.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: portable(v) for k, v in value.items() if isinstance(k, _PRIMITIVES)}
    if isinstance(value, tuple):
        return tuple(portable(v) for v in value)
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, _PRIMITIVES):
        return value
    return f"<{type(value).__name__}>"


def portable_capture(system: Any) -> dict[str, Any]:
    """A capture of a rank's live system, as `portable` values."""
    from torch.distributed.tensor import DTensor

    from pytest_ckpt.distributed.protocol import Parallel

    taken = capture(system)
    # the Parallel the harness handed the system: its rank and world size differ by design
    by_design = tuple(
        f"system.{name}."
        for name, v in getattr(system, "__dict__", {}).items()
        if isinstance(v, Parallel)
    )
    leaves = {
        path: {
            "kind": leaf.kind,
            "value": portable(leaf.value),
            "owner": leaf.owner,
            "persistent": leaf.persistent,
        }
        for path, leaf in taken.leaves.items()
        if leaf.kind not in _SHARDED
        and not path.startswith(by_design)
        and not isinstance(leaf.value, DTensor)
    }
    return {"leaves": leaves, "rngs": portable(taken.rngs)}


def _capture_from(record: Mapping[str, Any]) -> Capture:
    leaves = {path: Leaf(**fields) for path, fields in record["leaves"].items()}
    return Capture(leaves, dict(record["rngs"]))


def diagnose_world_size(
    saved: Mapping[str, Any],
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    resumed: Mapping[str, Any],
    *,
    seeds: tuple[int, int],
) -> list[str]:
    """The causes, best first: `saved` is what the SAVE rank wrote (its portable state and
    rank bundle); the others are `portable_capture` records. `seeds`: the SAVE and the LOAD
    ranks' build seeds; an attribute holding them differs by design and is no cause."""
    start, resumed_start = _capture_from(before), _capture_from(resumed)
    for path, leaf in list(resumed_start.leaves.items()):
        own = start.leaves.get(path)
        if leaf.kind == "attribute" and own is not None and (own.value, leaf.value) == seeds:
            resumed_start.leaves[path] = own
    return diagnose_resume(saved, start, _capture_from(after), resumed_start)


def compare_ranks(job: Any, continued: list[dict], resumed: list[dict], *, load_seed: int) -> None:
    """Each resumed rank r against continued rank r % SAVE: raise WorldSizeResumeMismatch
    with the causes first (`diagnose_world_size`), then the differences."""
    n, m = job.save_world_size, job.load_world_size
    for rank, result in enumerate(resumed):
        source = continued[rank % n]
        differences = diff_values(source["start"], result["start"], root="restored")
        differences += diff_values(source["steps"], result["steps"], root="steps")
        differences += diff_values(source["full"], result["full"], root="state")
        differences += diff_values(source["rank"], result["rank"], root="rank_state")
        if differences:
            causes = diagnose_world_size(
                source["saved"], source["before"], source["after"], result["resumed"],
                seeds=(job.seed, load_seed),
            )  # fmt: skip
            lines = [f"rank {rank}: {causes[0]}"] if causes else []
            lines += [f"  and: {cause}" for cause in causes[1:_SHOWN]]
            lines += [
                f"resuming at {m} rank(s) from a save at {n} differs from the run that "
                f"continued, after {job.steps} step(s): rank {rank} (vs continued rank "
                f"{rank % n}): {differences[0]}"
            ]
            lines += [f"  {d}" for d in differences[1:_SHOWN]]
            if len(differences) > _SHOWN:
                lines.append(f"  ... and more (first {_SHOWN} shown)")
            raise WorldSizeResumeMismatch("\n".join(lines))
