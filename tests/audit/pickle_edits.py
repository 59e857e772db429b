"""Hypothesis edits of a pickle, for the tests that prove a fast path gives the interpreter's
answer: bytes flipped anywhere, or GET/PUT memo indices pointed at other entries."""

from __future__ import annotations

import pickletools

from hypothesis import strategies as st


def flipped_bytes(data: st.DataObject, pickle_bytes: bytes) -> bytes:
    """One to three bytes anywhere past the PROTO header set to any value."""
    mutated = bytearray(pickle_bytes)
    edits = data.draw(
        st.lists(
            st.tuples(st.integers(2, len(mutated) - 2), st.integers(0, 255)),
            min_size=1,
            max_size=3,
        )
    )
    for at, value in edits:
        mutated[at] = value
    return bytes(mutated)


def memo_index_sites(pickle_bytes: bytes) -> tuple[list[int], int]:
    """Where the 1-byte GET/PUT indices of a pickle sit, and the highest index it PUTs."""
    ops = [(op.name, arg, pos) for op, arg, pos in pickletools.genops(pickle_bytes)]
    at = [pos + 1 for name, _arg, pos in ops if name in ("BINGET", "BINPUT")]
    return at, max(arg for name, arg, _pos in ops if name == "BINPUT")


def rewired(data: st.DataObject, pickle_bytes: bytes, sites: list[int], highest: int) -> bytes:
    """One to three of those indices pointed at another entry, or at one never set."""
    mutated = bytearray(pickle_bytes)
    edits = data.draw(
        st.lists(
            st.tuples(st.sampled_from(sites), st.integers(0, highest + 1)),
            min_size=1,
            max_size=3,
        )
    )
    for at, index in edits:
        mutated[at] = index
    return bytes(mutated)
