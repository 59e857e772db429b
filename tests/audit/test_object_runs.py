"""The fast path for later objects of a refused class changes the auditor's speed, never
its answer.

Each test runs one pickle through the interpreter with and without the fast paths and
compares everything a user can see of each finding (kind, path, other paths, detail, fix,
what to allow, offset), the cap's counts, stage 2 and the storages, or the error. The hostile
cases are built so that only the fast path could get them wrong: a global the runs call
flagged between them, memo entries the runs read written again, a run reading what the one
before wrote, a string the interpreter refuses inside a later run.
"""

from __future__ import annotations

import datetime
import enum
import itertools
import pickletools
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.audit.pickle_edits import flipped_bytes, memo_index_sites, rewired
from tests.audit.test_tensor_records import fast_equals_slow, interpreted, saved


class Stage(enum.Enum):
    DORMANT = 1
    TRAINING = 2


class Kind(enum.Enum):
    CONV = "conv"
    ATTENTION = "attention"


def run(data: bytes, sizes: dict[str, int] | None, *, fast: bool) -> tuple[object, int]:
    """What a user of the auditor sees, and how many objects the fast path took."""
    interp, findings = interpreted(data, sizes, fast=fast)
    if isinstance(findings, tuple):
        return findings, interp.objects_taken
    seen = [
        (
            f.kind,
            f.path,
            tuple(f.also_at),
            f.more_sites,
            f.detail,
            f.global_name,
            f.fix,
            f.fix_kind,
            f.needs,
            f.allowlist_helps,
            f.offset,
        )
        for f in findings
    ]
    counts = (interp.flags, interp.findings_omitted, interp.keys_omitted, interp.storages)
    return ("ok", seen, counts, interp.gate.needs_oracle()), interp.objects_taken


def same_with_and_without(data: bytes, sizes: dict[str, int] | None) -> tuple[object, int]:
    return fast_equals_slow(run, data, sizes)


def dates(count: int, prefix: str = "when") -> dict[str, datetime.date]:
    return {f"{prefix}{i}": datetime.date(2026, 1 + i % 12, 1 + i % 28) for i in range(count)}


def paths_of(verdict: object) -> list[str]:
    return [seen[1] for seen in verdict[1]]  # type: ignore[index]


def test_the_benchmarks_dirty_file_takes_every_date_after_the_first() -> None:
    state: dict[str, object] = {f"layer{i}.weight": torch.randn(4) for i in range(20)}
    state.update(dates(50))
    verdict, taken = same_with_and_without(*saved(state))
    assert taken == 49
    assert paths_of(verdict) == [f"root['when{i}']" for i in range(50)]


@pytest.mark.parametrize(
    "state",
    [
        pytest.param({f"slot{i}": {"stage": Stage(1 + i % 2)} for i in range(8)}, id="enums"),
        pytest.param({"kinds": [Kind.CONV, Kind.ATTENTION] * 3}, id="str-enums"),
        pytest.param({"days": list(dates(12).values())}, id="a-list-of-dates"),
        pytest.param({"old": (1, datetime.date(2020, 1, 1)), **dates(6)}, id="in-a-tuple"),
        pytest.param(
            {f"t{i}": datetime.datetime(2026, 1, 1, i, tzinfo=datetime.UTC) for i in range(6)},
            id="datetimes-with-a-zone",
        ),
        pytest.param({f"d{i}": datetime.timedelta(days=i, seconds=3) for i in range(6)}, id="ints"),
        pytest.param(
            (lambda day: {"a": day, "b": day, "c": [datetime.date(2021, 1, 1), day]})(
                datetime.date(2020, 1, 1)
            ),
            id="one-date-read-again",
        ),
        pytest.param(
            {"mixed": [datetime.date(2020, 1, 1), Stage.DORMANT, datetime.time(1, 2)] * 4},
            id="classes-in-turn",
        ),
    ],
)
def test_refused_objects_get_the_same_answer(state: dict[str, object]) -> None:
    same_with_and_without(*saved(state))


def test_past_the_findings_cap_the_counts_are_the_same() -> None:
    verdict, taken = same_with_and_without(*saved(dates(1100)))
    assert taken == 1099
    assert verdict[2][1] > 0  # findings_omitted: repeats past the cap are counted


def ops(data: bytes) -> list[tuple[str, object, int]]:
    return [(op.name, arg, pos) for op, arg, pos in pickletools.genops(data)]


def memoised_global(data: bytes, name: str) -> int:
    """The memo index the GLOBAL `name` ("module name") is PUT at."""
    listed = ops(data)
    return next(
        put[1]
        for here, put in itertools.pairwise(listed)
        if here[:2] == ("GLOBAL", name) and put[0] == "BINPUT"
    )


def date_runs(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each later date's run: its class's GET to its REDUCE's PUT."""
    listed, cls_index = ops(data), memoised_global(data, "datetime date")
    found = []
    for i, (name, arg, pos) in enumerate(listed):
        if name == "BINGET" and arg == cls_index:
            names = [n for n, _arg, _pos in listed[i:]]
            own = next(j for j in range(2, len(names)) if names[j - 2 : j + 1] == [
                "TUPLE1", "BINPUT", "REDUCE"])  # fmt: skip
            found.append((pos, listed[i + own][2] + 3))  # R, then its BINPUT
    return found


def test_a_global_the_runs_call_flagged_between_them_stops_the_fast_path() -> None:
    """A BUILD onto `_codecs.encode` (refused) between two dates: the dates after it call a
    flagged global, so they are the interpreter's; inside the last two, each encode call is
    now itself a later object of a refused global, and taken."""
    data, sizes = saved(dates(6))
    encode = memoised_global(data, "_codecs encode")
    _start, end = date_runs(data)[1]
    build_on_it = b"h" + bytes([encode]) + b"Nb0"  # GET, NONE, BUILD, POP
    verdict, taken = same_with_and_without(data[:end] + build_on_it + data[end:], sizes)
    assert taken == 2 + 2
    held = [seen[1] for seen in verdict[1] if "holding objects torch refuses" in seen[4]]
    assert held == ["root['when3']", "root['when4']", "root['when5']"]


def test_a_global_a_run_memoises_is_the_real_one_when_read_back() -> None:
    """A later date PUTs `_codecs.encode` as it reads it, and a BUILD after it reads that
    entry back: what the BUILD flags must be the global itself (a replay of the date would
    have put a clean stand-in there), so every date after it holds a refused object."""
    data, sizes = saved(dates(6))
    encode = memoised_global(data, "_codecs encode")
    start, end = date_runs(data)[1]
    get_encode = data.index(b"h" + bytes([encode]), start)
    edited = data[: get_encode + 2] + b"q\xc8" + data[get_encode + 2 : end]  # PUT 200
    edited += b"h\xc8Nb0" + data[end:]  # GET 200, NONE, BUILD, POP
    verdict, _taken = same_with_and_without(edited, sizes)
    held = [seen[1] for seen in verdict[1] if "holding objects torch refuses" in seen[4]]
    assert held == ["root['when3']", "root['when4']", "root['when5']"]


def test_a_class_written_again_between_runs_is_read_as_the_interpreter_reads_it() -> None:
    """A later date memoises its own date object over the class's memo entry: the next one
    calls that object (torch: a REDUCE of something not a global)."""
    data, sizes = saved(dates(6))
    runs = date_runs(data)
    cls_put = data[runs[0][0] + 1]  # the class's memo index, as the runs GET it
    _start, end = runs[2]
    edited = data[: end - 1] + bytes([cls_put]) + data[end:]  # its object's PUT -> the class's
    verdict, taken = same_with_and_without(edited, sizes)
    assert taken == 3  # up to the one that writes over the class
    assert any(seen[0] == "unsupported-operation" for seen in verdict[1])


def test_an_entry_name_written_over_the_class_is_what_the_run_calls() -> None:
    """A later date's entry name is PUT where the class was: its run then calls a string
    (torch: a REDUCE of something not a global), though its bytes are a date's."""
    data, sizes = saved(dates(6))
    runs = date_runs(data)
    cls_index = data[runs[0][0] + 1]
    start, _end = runs[2]
    assert data[start - 2] == ord("q")  # the entry name's PUT, just before the run
    edited = data[: start - 1] + bytes([cls_index]) + data[start:]
    verdict, taken = same_with_and_without(edited, sizes)
    assert taken == 2  # the two before it
    assert ("unsupported-operation", "root['when3']") in [seen[:2] for seen in verdict[1]]


def test_a_run_reading_what_the_run_before_wrote_is_the_interpreters() -> None:
    """The 'latin1' GET of a later date points at the previous date's text (a deferred memo
    entry): the interpreter builds it, and the answer is its own."""
    data, sizes = saved(dates(6))
    listed = ops(data)
    runs = date_runs(data)
    text_put = next(
        arg for name, arg, pos in listed if name == "BINPUT" and runs[2][0] < pos < runs[2][1]
    )
    start, end = runs[3]
    latin1 = next(arg for name, arg, _pos in listed if name == "BINPUT" and arg > 4)
    latin1_get = next(
        pos for name, arg, pos in listed if name == "BINGET" and arg == latin1 and start < pos < end
    )
    edited = data[: latin1_get + 1] + bytes([text_put]) + data[latin1_get + 2 :]
    verdict, taken = same_with_and_without(edited, sizes)
    assert taken >= 2 and verdict[0] == "ok"


def test_invalid_utf8_inside_a_later_run_is_the_interpreters_error() -> None:
    data, sizes = saved(dates(6))
    start, _end = date_runs(data)[3]
    text = data.index(b"X", start + 4)  # the date's bytes, as text
    edited = data[: text + 5] + b"\xff" + data[text + 6 :]
    verdict, _taken = same_with_and_without(edited, sizes)
    assert verdict[0] == "error" and "UTF-8" in str(verdict[2])


def test_a_text_holding_the_rest_of_its_run_is_read_by_its_length() -> None:
    """A later date's text holds the bytes that follow it in its run, so the learned
    pattern's shortest cut ends inside it: its declared length says where it really ends
    (such a text is never valid UTF-8: the interpreter's error)."""
    data, sizes = saved(dates(6))
    start, end = date_runs(data)[3]
    text = data.index(b"X", start)
    length = struct.unpack("<I", data[text + 1 : text + 5])[0]
    rest = data[text + 5 + length : end]
    fake = rest + b"ok"
    edited = data[:text] + b"X" + struct.pack("<I", len(fake)) + fake + data[text + 5 + length :]
    verdict, taken = same_with_and_without(edited, sizes)
    assert verdict[0] == "error" and taken == 3  # the three before it


@pytest.fixture(scope="module")
def small_dirty_pickle() -> tuple[bytes, dict[str, int]]:
    state: dict[str, object] = {"w": torch.ones(2), **dates(4)}
    state["stages"] = [Stage.DORMANT, Stage.TRAINING, datetime.date(2021, 2, 3)]
    state["more"] = dates(3, prefix="late")
    return saved(state)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_dirty_pickles_get_the_same_answer(small_dirty_pickle, data) -> None:
    """Flip bytes anywhere: whatever the interpreter says, the fast path says too."""
    pickle_bytes, sizes = small_dirty_pickle
    same_with_and_without(flipped_bytes(data, pickle_bytes), sizes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rewired_memo_indices_in_dirty_pickles_get_the_same_answer(
    small_dirty_pickle, data
) -> None:
    """Point GETs and PUTs at other memo entries: runs reading what others wrote, writing
    over the class or a function the next run reads, reading what was never set."""
    pickle_bytes, sizes = small_dirty_pickle
    sites, highest = memo_index_sites(pickle_bytes)
    same_with_and_without(rewired(data, pickle_bytes, sites, highest), sizes)


def test_long_memo_indices_are_taken_too() -> None:
    """Past 256 memo entries the runs' GETs and PUTs take 4 bytes."""
    state: dict[str, object] = {f"w{i}": torch.ones(1) for i in range(60)}
    state.update(dates(30))
    data, sizes = saved(state)
    assert b"r" + struct.pack("<I", 300) in data
    _verdict, taken = same_with_and_without(data, sizes)
    assert taken == 29


@pytest.fixture(scope="module")
def dirty_pickles() -> list[tuple[bytes, dict[str, int]]]:
    """Files saved before their weights_only fix, each repeating refused objects its own way."""
    return [
        saved({"w": torch.ones(2), **dates(5), "s": [Stage.DORMANT, datetime.date(2021, 2, 3)]}),
        saved({f"d{i}": datetime.timedelta(days=i, seconds=3) for i in range(6)}),
        saved({"k": [Kind.CONV, Kind.ATTENTION, datetime.time(1, 2), datetime.date(2020, 1, 1)]}),
        saved({f"t{i}": datetime.datetime(2026, 1, 1, i) for i in range(6)}),
        saved(list(dates(8).values())),
    ]


@pytest.mark.slow
@settings(max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_many_edited_dirty_pickles_get_the_same_answer(dirty_pickles, data) -> None:
    """The nightly size of the two tests above, over five kinds of dirty file."""
    pickle_bytes, sizes = data.draw(st.sampled_from(dirty_pickles))
    if data.draw(st.booleans()):
        edited = flipped_bytes(data, pickle_bytes)
    else:
        edited = rewired(data, pickle_bytes, *memo_index_sites(pickle_bytes))
    same_with_and_without(edited, sizes)
