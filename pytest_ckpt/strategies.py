"""Hypothesis strategies for slot ids, grids, seed lifecycles and checkpoint payloads.

Public API, for users' own property tests as much as ours:

    from hypothesis import given
    from pytest_ckpt import strategies as cst

    @given(cst.slot_grids(max_rows=3, max_cols=3), cst.stage_paths())
    def test_my_model_round_trips(grid, path): ...

Strategies for the bundled reference system's own objects (`SlotConfig`, `SeedState`) are in
`pytest_ckpt.reference.strategies`.

Every strategy takes keyword-only arguments, checks them eagerly, and shrinks towards small,
readable examples (row 0, one slot, the shortest stage path, flat payloads). torch is
imported only by the strategies that make tensors.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from pytest_ckpt.vocabulary import MAIN_LINE, SLOT_ID

__all__ = [
    "checkpoint_payloads",
    "invalid_slot_ids",
    "slot_grids",
    "slot_ids",
    "stage_paths",
    "unsafe_payloads",
]


def check_positive(**values: int) -> None:
    """Strategy arguments are checked eagerly, with the argument's name."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def slot_ids(*, max_row: int = 15, max_col: int = 15) -> st.SearchStrategy[str]:
    """Canonical slot ids `r{row}c{col}` with row <= max_row and col <= max_col."""
    check_positive(max_row=max_row + 1, max_col=max_col + 1)
    return st.builds(
        lambda r, c: f"r{r}c{c}",
        st.integers(0, max_row),
        st.integers(0, max_col),
    )


def invalid_slot_ids() -> st.SearchStrategy[str]:
    """Strings that are not canonical slot ids: legacy names, wrong case, leading zeros,
    signs, missing parts, surrounding space, and arbitrary text."""
    near_misses = st.one_of(
        st.sampled_from(["early", "mid", "late", "EARLY", "", "r", "c", "rc", "r0", "c0"]),
        st.builds(lambda r, c: f"R{r}C{c}", st.integers(0, 9), st.integers(0, 9)),
        st.builds(lambda r, c: f"r0{r}c{c}", st.integers(0, 9), st.integers(0, 9)),
        st.builds(lambda r, c: f"r-{r}c{c}", st.integers(0, 9), st.integers(0, 9)),
        st.builds(lambda r: f"r{r}c", st.integers(0, 9)),
        st.builds(
            lambda s, pad: pad + s + pad[::-1],
            slot_ids(max_row=9, max_col=9),
            st.sampled_from([" ", "\t", "\n"]),
        ),
        st.text(max_size=8),
    )
    return near_misses.filter(lambda s: SLOT_ID.fullmatch(s) is None)


def slot_grids(*, max_rows: int = 4, max_cols: int = 4) -> st.SearchStrategy[tuple[int, int]]:
    """(rows, cols) with 1 <= rows <= max_rows and 1 <= cols <= max_cols."""
    check_positive(max_rows=max_rows, max_cols=max_cols)
    return st.tuples(st.integers(1, max_rows), st.integers(1, max_cols))


def stage_paths(*, end_in_pruned: bool | None = None) -> st.SearchStrategy[list[str]]:
    """Legal walks through the lifecycle from DORMANT, as stage names (DORMANT first).

    end_in_pruned: True forces a path that ends PRUNED, False forbids it, None allows both.
    """
    if end_in_pruned not in (True, False, None):
        raise ValueError(f"end_in_pruned must be True, False or None, got {end_in_pruned!r}")
    main_line = list(MAIN_LINE)

    def build(length: int, prune: bool) -> list[str]:
        if prune:  # only a live seed (GERMINATED..PROBATIONARY) can be pruned
            return [*main_line[: min(max(length, 1), 4) + 1], "PRUNED"]
        return main_line[: length + 1]

    prune = st.booleans() if end_in_pruned is None else st.just(end_in_pruned)
    return st.builds(build, st.integers(0, 5), prune)


# ---- checkpoint payloads --------------------------------------------------------------------

_PRIMITIVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    # Non-empty: protocol 2 pickles b"" as a call of builtins.bytes, which weights_only
    # refuses (found by the differential property; see tests/audit/test_corpus.py).
    st.binary(min_size=1, max_size=12),
)
_KEYS = st.one_of(st.text(max_size=8), st.integers(-5, 5))


def _tensors() -> st.SearchStrategy[Any]:
    def build(dtype_name: str, shape: list[int], seed: int) -> Any:
        import torch

        dtype = getattr(torch, dtype_name)
        generator = torch.Generator().manual_seed(seed)
        base = torch.randn(shape, generator=generator, dtype=torch.float64) * 10
        return base.to(dtype)

    return st.builds(
        build,
        st.sampled_from(
            [
                "float32",
                "float64",
                "float16",
                "bfloat16",
                "int64",
                "int32",
                "int8",
                "uint8",
                "bool",
                "complex64",
            ]
        ),
        st.lists(st.integers(0, 4), max_size=3),  # [] is a 0-d tensor; a 0 makes it empty
        st.integers(0, 2**16),
    )


def _shared_views() -> st.SearchStrategy[Any]:
    """Two views of one storage: a round trip must keep them sharing it."""

    def build(n: int, start: int) -> Any:
        import torch

        base = torch.arange(float(n))
        return {"base": base, "view": base[start:]}

    return st.builds(build, st.integers(1, 8), st.integers(0, 1))


def checkpoint_payloads(*, max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Nested dicts, lists and tuples of primitives and tensors (varied dtypes and shapes,
    0-d and empty ones, shared storages): what `torch.load(weights_only=True)` accepts."""
    check_positive(max_leaves=max_leaves)
    leaves = st.one_of(_PRIMITIVES, _tensors(), _shared_views())
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.lists(children, max_size=3).map(tuple),
            st.dictionaries(_KEYS, children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


class _Color(enum.Enum):
    RED = 1


@dataclasses.dataclass
class _Record:
    value: int = 1


def _unsafe_objects() -> st.SearchStrategy[object]:
    """Objects torch's weights_only loader refuses (no numpy: it is not a dependency)."""
    makers: list[Callable[[], object]] = [
        lambda: _Color.RED,
        lambda: _Record(),
        lambda: datetime.datetime(2026, 1, 1),
        lambda: datetime.timedelta(seconds=1),
        lambda: collections.deque([1]),
        lambda: collections.defaultdict(int),
        lambda: frozenset({1}),
    ]
    return st.sampled_from(makers).map(lambda make: make())


def unsafe_payloads(
    *, max_leaves: int = 12, max_objects: int = 1
) -> st.SearchStrategy[tuple[Any, Any]]:
    """(payload, path): a checkpoint payload with one object torch rejects planted at `path`
    (a path like `root['a'][0]`, as the auditor and the plugin report it).

    With `max_objects` > 1, 1 to `max_objects` objects are planted, several of one class
    among them, and the second item is the tuple of every path at which a refused object
    is, sorted: objects in dicts and lists of the payload, in tuples, in deques (the deque
    is refused too, at its own path), as dict keys (`.keys()[i]`, with the same object as
    the value under it, `.values()[i]`), in sets (`[...]`), and aliases (the same object
    planted again elsewhere, which a pickle memoizes: one object at two paths).
    """
    check_positive(max_leaves=max_leaves, max_objects=max_objects)
    if max_objects > 1:
        return _several_unsafe(max_leaves, max_objects)

    @st.composite
    def build(draw: st.DrawFn) -> tuple[Any, str]:
        root = {"payload": draw(checkpoint_payloads(max_leaves=max_leaves))}
        bad = draw(_unsafe_objects())
        # Walk a random route down dicts and lists (tuples cannot be assigned into), then
        # replace what is there with the unsafe object.
        holder: Any = root
        key: Any = "payload"
        route = ["['payload']"]
        current = root["payload"]
        while isinstance(current, (dict, list)) and current and draw(st.booleans()):
            if isinstance(current, dict):
                key = draw(st.sampled_from(sorted(current, key=repr)))
                route.append(f"[{key!r}]")
            else:
                key = draw(st.integers(0, len(current) - 1))
                route.append(f"[{key}]")
            holder, current = current, current[key]
        holder[key] = bad
        return root, "root" + "".join(route)

    return build()


_HASHABLE = (_Color, datetime.datetime, datetime.timedelta, frozenset)


def _holders(value: Any, path: str) -> list[tuple[Any, str]]:
    """Every dict and list of a payload reachable through dicts and lists, with its path."""
    if not isinstance(value, (dict, list)):
        return []
    found = [(value, path)]
    items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
    for key, item in items:
        label = f"[{key!r}]" if isinstance(value, dict) else f"[{key}]"
        found += _holders(item, path + label)
    return found


def _several_unsafe(max_leaves: int, max_objects: int) -> st.SearchStrategy[tuple[Any, Any]]:
    """`unsafe_payloads(max_objects=...)`: several objects, their shapes and aliases."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[Any, tuple[str, ...]]:
        root = {"payload": draw(checkpoint_payloads(max_leaves=max_leaves))}
        holders = _holders(root, "root")
        planted: list[Any] = []
        paths: list[str] = []
        for i in range(draw(st.integers(1, max_objects))):
            reuse = bool(planted) and draw(st.booleans())
            bad = draw(st.sampled_from(planted)) if reuse else draw(_unsafe_objects())
            planted.append(bad)
            holder, where = draw(st.sampled_from(holders))
            key: str | int
            if isinstance(holder, dict):
                holder[f"planted{i}"] = None
                key, at = f"planted{i}", f"{where}['planted{i}']"
            else:
                holder.append(None)
                key, at = len(holder) - 1, f"{where}[{len(holder) - 1}]"
            shape = draw(st.sampled_from(["plain", "tuple", "deque", "key", "set"]))
            if shape in ("key", "set") and not isinstance(bad, _HASHABLE):
                shape = "plain"
            if shape == "plain":
                holder[key], found = bad, [at]
            elif shape == "tuple":
                holder[key], found = (0, bad), [f"{at}[1]"]
            elif shape == "deque":
                holder[key], found = collections.deque([bad]), [at, f"{at}[0]"]
            elif shape == "key":
                holder[key] = {"first": 0, bad: bad}
                found = [f"{at}.keys()[1]", f"{at}.values()[1]"]
            else:
                holder[key], found = {bad}, [f"{at}[...]"]
            paths += found
        return root, tuple(sorted(paths))

    return build()
