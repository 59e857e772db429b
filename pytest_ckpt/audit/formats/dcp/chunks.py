"""Do a tensor's chunks tile it exactly: every element in one chunk, none outside?

DCP's metadata lists, for each tensor, its global shape and the chunks the ranks wrote
(offsets and sizes per dimension). A load reads each requested region from the chunks that
overlap it, so a gap is an element nobody wrote (the loaded value is whatever the target
held), an overlap is two writers of one element (which wins depends on the read order), and
an out-of-bounds chunk is data that lands nowhere. Pure Python over tuples of ints.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

Chunk = tuple[tuple[int, ...], tuple[int, ...]]  # offsets, sizes


def _describe(index: int, chunk: Chunk) -> str:
    return f"chunk {index} (offsets {list(chunk[0])}, sizes {list(chunk[1])})"


def _overlap(a: Chunk, b: Chunk) -> bool:
    return all(
        oa < ob + sb and ob < oa + sa for oa, sa, ob, sb in zip(a[0], a[1], b[0], b[1], strict=True)
    )


def _is_whole(shape: tuple[int, ...], chunk: Chunk) -> bool:
    """One chunk at offset 0 with the tensor's own (non-negative int) sizes."""
    offsets, sizes = chunk
    if tuple(sizes) != shape or len(offsets) != len(shape):
        return False
    for n in shape:  # loops, not all(...): once per tensor of a folder
        if type(n) is not int or n < 0:
            return False
    return tuple(offsets) == (0,) * len(shape) and all(type(o) is int for o in offsets)


# Bounds on the overlap sweep: pairs of chunks compared, overlaps named. A layout that needs
# more (thousands of chunks stacked on one slab) is refused as unverifiable, never waved on.
_PAIR_BUDGET = 1_000_000
_OVERLAPS_NAMED = 10


def chunk_problems(shape: Sequence[int], chunks: Sequence[Chunk]) -> list[str]:
    """What is wrong with how `chunks` cover a tensor of `shape`; [] when they tile it.

    Overlaps are found with a sweep along the dimension the chunks are split on (the one
    with the most distinct offsets), so each chunk meets only the chunks of its own slab:
    O(n log n) for a split along any one dimension. The work is bounded: past
    `_PAIR_BUDGET` comparisons the layout is reported as one that cannot be verified.
    """
    shape = tuple(shape)
    if len(chunks) == 1 and _is_whole(shape, chunks[0]):
        return []  # what the sweep below finds for one chunk that is the whole tensor
    problems: list[str] = []
    placed: list[tuple[int, Chunk]] = []
    volume = 0
    for index, (offsets, sizes) in enumerate(chunks):
        chunk = (tuple(offsets), tuple(sizes))
        if len(chunk[0]) != len(shape) or len(chunk[1]) != len(shape):
            problems.append(
                f"{_describe(index, chunk)} does not have the tensor's {len(shape)} dimension(s)"
            )
        elif any(o < 0 or s < 0 or o + s > n for o, s, n in zip(*chunk, shape, strict=True)):
            problems.append(f"{_describe(index, chunk)} lies outside the shape {list(shape)}")
        elif math.prod(chunk[1]):
            volume += math.prod(chunk[1])
            placed.append((index, chunk))
    problems += _overlaps(shape, placed)
    numel = math.prod(shape)
    if not problems and volume != numel:
        problems.append(
            f"the chunks cover {volume} of the {numel} elements of shape {list(shape)}: a gap"
        )
    return problems


def _sweep_dimension(shape: tuple[int, ...], placed: list[tuple[int, Chunk]]) -> int | None:
    """The dimension with the most distinct chunk offsets (the first on a tie); None for 0-d."""
    if not shape:
        return None
    counts = [len({chunk[0][d] for _, chunk in placed}) for d in range(len(shape))]
    return counts.index(max(counts))


def _overlaps(shape: tuple[int, ...], placed: list[tuple[int, Chunk]]) -> list[str]:
    """Pairs of non-empty, in-bounds chunks that share an element, found by a sweep along
    `_sweep_dimension`: chunks are taken in order of their start there, and a heap drops
    those that ended before the next one starts."""
    dim = _sweep_dimension(shape, placed)
    start = (lambda chunk: 0) if dim is None else (lambda chunk: chunk[0][dim])
    end = (lambda chunk: 1) if dim is None else (lambda chunk: chunk[0][dim] + chunk[1][dim])
    placed = sorted(placed, key=lambda item: (start(item[1]), item[0]))
    found: list[str] = []
    active: dict[int, Chunk] = {}
    ends: list[tuple[int, int]] = []
    compared = 0
    for index, chunk in placed:
        while ends and ends[0][0] <= start(chunk):
            active.pop(heapq.heappop(ends)[1], None)
        compared += len(active)
        if compared > _PAIR_BUDGET:
            found.append(
                f"{len(placed)} chunks share slabs so densely that more than {_PAIR_BUDGET} "
                "pairs would have to be compared: the tiling cannot be verified"
            )
            return found
        for other_index in sorted(active):
            other = active[other_index]
            if _overlap(other, chunk):
                found.append(
                    f"{_describe(other_index, other)} and {_describe(index, chunk)} overlap"
                )
                if len(found) == _OVERLAPS_NAMED:
                    found.append(f"(stopped after {_OVERLAPS_NAMED} overlaps)")
                    return found
        active[index] = chunk
        heapq.heappush(ends, (end(chunk), index))
    return found
