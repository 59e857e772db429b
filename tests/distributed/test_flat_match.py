"""`metadata_records.FlatMatch` parses a flat DCP object an item at a time; the regex it
stands for (its items nested as optional groups, greedy, backtracking) is the
specification: on items of every kind, cut, spliced and flipped, both give the same
groups, start and end, or both find none."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ckpt.audit.formats.dcp import metadata_records as records


def _nested_regex() -> re.Pattern[bytes]:
    items = b""
    for _ in range(records._MAX_ITEMS):
        items = rb"(?:" + records._ITEM + items + rb")?"
    return re.compile(records._NEWOBJ_STATE + items + rb"ub", re.DOTALL)


NESTED = _nested_regex()

_GETS = st.sampled_from([b"h\x07", b"h!", b"j\x2a\x20\x01\x00", b"hu", b"h\x8a"])
_SMALL = st.sampled_from([b"K\x00", b"K\x85", b"Mu\x01", b"J\x01\x02\x03\x04", b"K("])
_SHAPES = st.one_of(
    st.just(b")"),
    _SMALL.map(lambda i: i + b"\x85\x94"),
    st.tuples(_SMALL, _SMALL).map(lambda t: b"".join(t) + b"\x86\x94"),
    st.tuples(_SMALL, _SMALL, _SMALL).map(lambda t: b"".join(t) + b"\x87\x94"),
    st.lists(_SMALL, max_size=4).map(lambda t: b"(" + b"".join(t) + b"t\x94"),
)
_ITEMS = st.one_of(
    st.tuples(_GETS, _SHAPES).map(lambda t: t[0] + t[1] + b"\x85\x94R\x94"),
    _GETS,
    _SMALL,
    st.integers(1, 8).map(lambda n: b"\x8a" + bytes([n]) + b"u" * n),
    st.sampled_from([b"N", b"\x88", b"\x89", b"ub", b"u", b"b", b"\x85\x94", b"t\x94"]),
)


@st.composite
def flat_objects(draw: st.DrawFn) -> tuple[bytes, int]:
    """A flat object's bytes (some 0-10 items, some not items at all) behind a prefix,
    then edited: cut, a byte flipped, or left."""
    prefix = draw(st.binary(max_size=3))
    body = draw(_GETS) + b")\x81\x94}\x94(" + b"".join(draw(st.lists(_ITEMS, max_size=10)))
    data = prefix + body + draw(st.sampled_from([b"ub", b"ubX", b"u", b"", b"b"]))
    edit = draw(st.sampled_from(["none", "cut", "flip"]))
    if edit == "cut" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif edit == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    return data, len(prefix)


@settings(max_examples=3000, deadline=None)
@given(flat_objects())
def test_flat_match_is_the_nested_regex(case: tuple[bytes, int]) -> None:
    data, pos = case
    expected = NESTED.match(data, pos)
    found = records.FlatMatch.match(data, pos)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert (found.groups(), found.start(), found.end()) == (
            expected.groups(),
            expected.start(),
            expected.end(),
        )


def test_the_spec_finds_flat_objects_of_every_item_kind() -> None:
    """The comparison above is not vacuous: the regex matches objects with items."""
    data = b"h\x07)\x81\x94}\x94(h!K\x00j\x2a\x20\x01\x00h!K\x04\x85\x94\x85\x94R\x94N\x88ub"
    match = NESTED.match(data)
    assert match is not None and match.end() == len(data)
    found = records.FlatMatch.match(data, 0)
    assert found is not None and found.groups() == match.groups()
