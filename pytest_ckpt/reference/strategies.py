"""Hypothesis strategies for the reference system's own objects: `SlotConfig`s and
`SeedState`s. The generic ones (slot ids, grids, stage paths, payloads) are in
`pytest_ckpt.strategies`, which these build on."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from pytest_ckpt.reference.lifecycle import SeedStage, SeedState
from pytest_ckpt.reference.slots import SlotConfig
from pytest_ckpt.strategies import check_positive, slot_grids, slot_ids, stage_paths

__all__ = ["seed_states", "slot_configs"]


def slot_configs(*, max_rows: int = 4, max_cols: int = 4) -> st.SearchStrategy[Any]:
    """`SlotConfig`s: full grids and irregular non-empty subsets of them."""
    check_positive(max_rows=max_rows, max_cols=max_cols)
    grids = slot_grids(max_rows=max_rows, max_cols=max_cols).map(lambda g: SlotConfig.grid(*g))
    cells = st.lists(
        st.tuples(st.integers(0, max_rows - 1), st.integers(0, max_cols - 1)),
        min_size=1,
        max_size=max_rows * max_cols,
        unique=True,
    ).map(lambda pairs: SlotConfig.from_ids(f"r{r}c{c}" for r, c in pairs))
    return st.one_of(grids, cells)


def seed_states(*, slot_id: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Any]:
    """`SeedState`s reached by a legal stage path, with a deterministic clock."""

    def build(slot: str, path: list[str], start: float, step: float, blueprint: str) -> Any:
        state = SeedState.new(seed_id=f"{slot}/seed1", slot_id=slot, blueprint=blueprint, now=start)
        for i, name in enumerate(path[1:], start=1):
            state.enter(SeedStage[name], now=start + i * step)
        return state

    return st.builds(
        build,
        slot_id if slot_id is not None else slot_ids(max_row=3, max_col=3),
        stage_paths(),
        st.floats(0, 2e9, allow_nan=False),
        st.floats(0, 1e4, allow_nan=False),
        st.sampled_from(["conv3x3", "bottleneck", "mlp", "lowrank"]),
    )
