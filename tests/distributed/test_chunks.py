"""A tensor's chunks must tile it: no gap, no overlap, nothing out of bounds."""

from __future__ import annotations

import pytest

from pytest_ckpt.audit.formats.dcp.chunks import chunk_problems


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [
        ((8, 4), [((0, 0), (4, 4)), ((4, 0), (4, 4))]),  # FSDP2 on 2 ranks
        ((8, 4), [((0, 0), (8, 2)), ((0, 2), (8, 2))]),  # split along dim 1
        ((3,), [((0,), (2,)), ((2,), (1,)), ((3,), (0,))]),  # an empty chunk at the end
        ((), [((), ())]),  # a 0-d tensor
        ((0, 5), []),  # an empty tensor
    ],
)
def test_chunks_that_tile_the_tensor_have_no_problem(shape, chunks) -> None:
    assert chunk_problems(shape, chunks) == []


@pytest.mark.parametrize(
    ("shape", "chunks", "problem"),
    [
        ((8, 4), [((0, 0), (4, 4)), ((3, 0), (4, 4))], "chunk 0 (offsets [0, 0], sizes [4, 4]) "
         "and chunk 1 (offsets [3, 0], sizes [4, 4]) overlap"),
        ((8, 4), [((0, 0), (4, 4)), ((4, 0), (3, 4))], "the chunks cover 28 of the 32 elements "
         "of shape [8, 4]: a gap"),
        ((8, 4), [((0, 0), (4, 4)), ((5, 0), (4, 4))], "chunk 1 (offsets [5, 0], sizes [4, 4]) "
         "lies outside the shape [8, 4]"),
        ((8, 4), [((0,), (8,))], "chunk 0 (offsets [0], sizes [8]) does not have the tensor's 2 "
         "dimension(s)"),
        ((), [((), ()), ((), ())], "chunk 0 (offsets [], sizes []) and chunk 1 (offsets [], "
         "sizes []) overlap"),
        ((4,), [((0,), (4,)), ((0,), (-1,))], "chunk 1 (offsets [0], sizes [-1]) lies outside"),
    ],
)  # fmt: skip
def test_gaps_overlaps_and_strays_are_named(shape, chunks, problem) -> None:
    problems = chunk_problems(shape, chunks)
    assert len(problems) == 1 and problems[0].startswith(problem)


def test_an_overlap_far_along_dim_0_is_still_found() -> None:
    long = ((0, 0), (100, 1))  # stays "active" through the sweep
    chunks = [long] + [((i, 1), (1, 1)) for i in range(100)] + [((50, 0), (1, 1))]
    assert chunk_problems((100, 2), chunks) == [
        "chunk 0 (offsets [0, 0], sizes [100, 1]) and chunk 101 (offsets [50, 0], sizes [1, 1]) "
        "overlap"
    ]


@pytest.mark.parametrize(
    ("shape", "chunk"),
    [
        ((4, 2), ((0, 0), (4, 2))),
        ((), ((), ())),
        ((0, 3), ((0, 0), (0, 3))),
        ((4, 2), ((1, 0), (4, 2))),
        ((-1,), ((0,), (-1,))),
        ((4,), ((0, 0), (4, 2))),
        ((True, 2), ((0, 0), (True, 2))),
        ((4, 2), ((False, 0), (4, 2))),
    ],
)
def test_the_one_whole_chunk_shortcut_answers_as_the_sweep(shape, chunk, monkeypatch) -> None:
    from pytest_ckpt.audit.formats.dcp import chunks

    fast = chunk_problems(shape, [chunk])
    monkeypatch.setattr(chunks, "_is_whole", lambda shape, chunk: False)
    assert fast == chunk_problems(shape, [chunk])


def _count_comparisons(monkeypatch) -> list[int]:
    from pytest_ckpt.audit.formats.dcp import chunks

    calls = [0]
    compare = chunks._overlap

    def counting(a, b):
        calls[0] += 1
        return compare(a, b)

    monkeypatch.setattr(chunks, "_overlap", counting)
    return calls


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_a_split_along_any_dimension_compares_each_chunk_with_its_neighbours_only(
    dim, monkeypatch
) -> None:
    """32,000 chunks split along dimension 1 took minutes with a sweep along dimension 0
    (every chunk stayed active): the sweep follows the split."""
    calls = _count_comparisons(monkeypatch)
    n = 32_000
    shape = [2, 2, 2]
    shape[dim] = n
    chunks = []
    for i in range(n):
        offsets, sizes = [0, 0, 0], list(shape)
        offsets[dim], sizes[dim] = i, 1
        chunks.append((tuple(offsets), tuple(sizes)))
    assert chunk_problems(tuple(shape), chunks[::-1]) == []
    assert calls[0] == 0


def test_a_grid_split_compares_within_one_slab() -> None:
    chunks = [((r, c), (1, 1)) for r in range(60) for c in range(60)]
    assert chunk_problems((60, 60), chunks) == []
    chunks.append(((59, 59), (1, 1)))
    problems = chunk_problems((60, 60), chunks)
    assert problems == [
        "chunk 3599 (offsets [59, 59], sizes [1, 1]) and chunk 3600 (offsets [59, 59], "
        "sizes [1, 1]) overlap"
    ]


def test_thousands_of_stacked_chunks_are_named_a_few_at_a_time() -> None:
    chunks = [((0, 0), (4, 4))] * 5_000
    problems = chunk_problems((4, 4), chunks)
    assert len(problems) == 11 and problems[-1] == "(stopped after 10 overlaps)"


def test_a_layout_past_the_comparison_budget_is_never_called_tiled(monkeypatch) -> None:
    from pytest_ckpt.audit.formats.dcp import chunks as module

    monkeypatch.setattr(module, "_PAIR_BUDGET", 100)
    chunks = [((r, c), (1, 1)) for r in range(30) for c in range(30)]
    problems = chunk_problems((30, 30), chunks)
    assert len(problems) == 1 and problems[0].endswith("the tiling cannot be verified")
