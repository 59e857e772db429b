"""Do a tensor's chunks tile it exactly: every element in one chunk, none outside?

DCP's metadata lists, for each tensor, its global shape and the chunks the ranks wrote
(offsets and sizes per dimension). A load reads each requested region from the chunks that
overlap it, so a gap is an element nobody wrote (the loaded value is whatever the target
held), an overlap is two writers of one element (which wins depends on the read order), and
an out-of-bounds chunk is data that lands nowhere. Pure Python over tuples of ints.
"""

from __future__ import annotations

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
    return (
        tuple(sizes) == shape
        and len(offsets) == len(shape)
        and all(type(n) is int and n >= 0 for n in shape)
        and all(type(o) is int and o == 0 for o in offsets)
    )


def chunk_problems(shape: Sequence[int], chunks: Sequence[Chunk]) -> list[str]:
    """What is wrong with how `chunks` cover a tensor of `shape`; [] when they tile it.

    Overlaps are found with a sweep along dimension 0 (sharded tensors are split along it,
    so each chunk meets only its neighbours): near-linear in the number of chunks.
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
    if not shape:  # a 0-d tensor: its chunks are all the one element
        placed.sort()
    else:
        placed.sort(key=lambda item: item[1][0][0])
    active: list[tuple[int, Chunk]] = []
    for index, chunk in placed:
        start = chunk[0][0] if shape else 0
        active = [(i, c) for i, c in active if not shape or c[0][0] + c[1][0] > start]
        for other_index, other in active:
            if _overlap(other, chunk):
                problems.append(
                    f"{_describe(other_index, other)} and {_describe(index, chunk)} overlap"
                )
        active.append((index, chunk))
    numel = math.prod(shape)
    if not problems and volume != numel:
        problems.append(
            f"the chunks cover {volume} of the {numel} elements of shape {list(shape)}: a gap"
        )
    return problems
