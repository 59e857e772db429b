"""The fast path for tensor records changes the auditor's speed, never its answer.

Every test runs the same pickle through the interpreter with and without the fast path and
compares everything a user can see: the findings (kind, path, detail, fix...), the storage
count, or the error. The hostile cases are built so that only the fast path could get them
wrong: memo entries rewritten between records, globals flagged after a record used them,
internals of a skipped record read back later, a lying storage size mid-file.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ckpt.audit.allowlist import load_allowlist
from pytest_ckpt.audit.formats.torch_archive import open_checkpoint
from pytest_ckpt.audit.nodes import Finding
from pytest_ckpt.audit.opcodes import MalformedPickle, TruncatedPickle
from pytest_ckpt.audit.record_grammar import TENSOR_RECORD
from pytest_ckpt.audit.verdict import PickleInterpreter
from tests.audit.pickle_edits import flipped_bytes, memo_index_sites, rewired

ALLOWLIST = load_allowlist()


def saved(obj: object) -> tuple[bytes, dict[str, int]]:
    """data.pkl of `torch.save(obj)` and its storage sizes, as the auditor reads them."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(buffer) as archive:
        names = archive.namelist()
        prefix = names[0].split("/", 1)[0]
        sizes = {
            name.split("/data/", 1)[1]: archive.getinfo(name).file_size
            for name in names
            if "/data/" in name
        }
        return archive.read(f"{prefix}/data.pkl"), sizes


def interpreted(
    data: bytes, sizes: dict[str, int] | None, *, fast: bool
) -> tuple[PickleInterpreter, list[Finding] | tuple[str, str, str]]:
    """The interpreter after a run of `data` (with or without the fast paths), and the
    findings, or the error it raised as ("error", its type, its message)."""
    interp = PickleInterpreter(data, ALLOWLIST, storage_sizes=sizes, fast_records=fast)
    try:
        _root, findings = interp.run()
    except (TruncatedPickle, MalformedPickle) as err:
        return interp, ("error", type(err).__name__, str(err))
    return interp, findings


def run(data: bytes, sizes: dict[str, int] | None, *, fast: bool) -> tuple[object, ...]:
    """What a user of the auditor sees, and how many records the fast path took."""
    interp, findings = interpreted(data, sizes, fast=fast)
    if isinstance(findings, tuple):
        return findings, interp.records_taken
    seen = [
        (f.kind, f.path, f.detail, f.global_name, f.fix, f.allowlist_helps, f.offset)
        for f in findings
    ]
    stage2 = interp.gate.needs_oracle()  # whether torch's unpickler must judge it: seen too
    return ("ok", interp.storages, seen, stage2), interp.records_taken


def fast_equals_slow(
    runner: Callable[..., tuple[object, int]], data: bytes, sizes: dict[str, int] | None
) -> tuple[object, int]:
    """`runner`'s answer and count taken with the fast path, asserted equal to its answer
    without (which takes nothing)."""
    fast, taken = runner(data, sizes, fast=True)
    slow, none_taken = runner(data, sizes, fast=False)
    assert none_taken == 0
    assert fast == slow
    return fast, taken


def same_with_and_without(data: bytes, sizes: dict[str, int] | None) -> tuple[object, int]:
    return fast_equals_slow(run, data, sizes)


def varied_state() -> dict[str, torch.Tensor]:
    """Every shape of record torch.save writes for plain tensors, past 256 memo entries."""
    torch.manual_seed(0)
    base = torch.arange(24.0)
    state: dict[str, torch.Tensor] = {
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0, 3),
        "five_d": torch.ones(1, 2, 1, 2, 1),
        "big": torch.zeros(70_000, dtype=torch.uint8),  # numel needs a 4-byte int
        "long": torch.arange(3),
        "half": torch.ones(2, dtype=torch.float16),
        "bool": torch.ones(2, dtype=torch.bool),
        "base": base,
        "view": base[3:15:3],  # shares its storage: the key is a GET
        "transposed": base.view(4, 6).t(),
    }
    state.update({f"blocks.{i}.weight": torch.randn(2, 3) for i in range(60)})
    return state


def test_a_state_dict_goes_through_the_fast_path_with_the_same_answer() -> None:
    state = varied_state()
    data, sizes = saved(state)
    (verdict, taken) = same_with_and_without(data, sizes)
    assert verdict == ("ok", len(state), [], False)
    # The first record names its globals (GLOBAL, not GET) and each new storage type does
    # too, so those go through the opcode loop; every other record takes the fast path.
    first_of_a_type = len({t.dtype for t in state.values()})
    assert taken == len(state) - first_of_a_type


def parameter_state() -> dict[str, torch.Tensor]:
    """Parameters as torch.save writes them (requiring grad or not, float or int, views),
    and plain tensors between them, past 256 memo entries."""
    base = torch.arange(24.0)
    state: dict[str, torch.Tensor] = {
        "frozen": torch.nn.Parameter(torch.ones(2), requires_grad=False),
        "int": torch.nn.Parameter(torch.arange(3), requires_grad=False),
        "half": torch.nn.Parameter(torch.ones(2, dtype=torch.float16)),
        "base": torch.nn.Parameter(base),
        "view": torch.nn.Parameter(base[3:15:3]),
        "plain": torch.ones(2),
    }
    state.update({f"blocks.{i}.weight": torch.nn.Parameter(torch.randn(2)) for i in range(60)})
    return state


def test_a_parameter_state_dict_goes_through_the_fast_path_with_the_same_answer(
    monkeypatch,
) -> None:
    """Each Parameter is one record, taken whole with its entry's name (not its tensor
    alone, with the Parameter's call left to the opcode loop)."""
    from pytest_ckpt.audit import verdict as interpreter

    taken_with_names = []
    original = interpreter.take_tensor_records

    def spy(interp: PickleInterpreter, pos: int, *, named: bool) -> int | None:
        before = interp.records_taken
        after = original(interp, pos, named=named)
        if named:
            taken_with_names.append(interp.records_taken - before)
        return after

    monkeypatch.setattr(interpreter, "take_tensor_records", spy)
    state = parameter_state()
    data, sizes = saved(state)
    (verdict, taken) = same_with_and_without(data, sizes)
    assert verdict == ("ok", len(state), [], False)
    # as for tensors: each record that names a storage type (the first Parameter names the
    # rebuild functions too) goes through the opcode loop; every other is taken whole
    assert taken == len(state) - len({t.dtype for t in state.values()})
    assert sum(taken_with_names) == taken


def test_a_parameter_of_ints_that_requires_grad_is_left_to_the_interpreter() -> None:
    """torch refuses requires_grad on an int tensor: the fast path takes only the tensor
    inside the second Parameter, and stage 2 judges the Parameter."""
    data, sizes = saved(
        {"a": torch.nn.Parameter(torch.ones(2)), "b": torch.nn.Parameter(torch.ones(2))}
    )
    edited = data.replace(b"ctorch\nFloatStorage", b"ctorch\nIntStorage")
    verdict, taken = same_with_and_without(edited, sizes)
    assert verdict[0] == "ok" and verdict[3] is True and taken == 1


def test_the_corpus_gets_the_same_answer(corpus) -> None:
    folder, cases = corpus
    for name in cases:
        checkpoint = open_checkpoint(folder / name)
        sizes = checkpoint.storage_sizes if checkpoint.format == "zip" else None
        data = checkpoint.pickle[checkpoint.pickle_start :]
        same_with_and_without(data, sizes)


def records(data: bytes) -> list[object]:
    return list(TENSOR_RECORD.finditer(data))


def splice(data: bytes, at: int, ops: bytes) -> bytes:
    return data[:at] + ops + data[at:]


def three_tensors() -> tuple[bytes, dict[str, int]]:
    return saved({"a": torch.zeros(2), "b": torch.ones(3), "c": torch.arange(4.0)})


def test_a_rebuild_function_swapped_between_records_is_caught() -> None:
    data, sizes = three_tensors()
    first = records(data)[0]  # record "b": its rebuild function is memo entry `index`
    index = first.group(1)[1]
    swap = b"cos\nsystem\n" + b"q" + bytes([index]) + b"0"  # GLOBAL os.system, PUT, POP
    verdict, taken = same_with_and_without(splice(data, first.end(), swap), sizes)
    assert taken == 1  # "b" only: "c" now calls os.system
    paths = {(kind, path) for kind, path, *_ in verdict[2]}
    assert ("unsupported-global", "root['c']") in paths


def test_a_global_flagged_after_a_record_used_it_is_taken_over_by_the_next() -> None:
    data, sizes = three_tensors()
    first = records(data)[0]
    index = first.group(1)[1]
    build_on_it = b"h" + bytes([index]) + b"Nb0"  # GET, NONE, BUILD (refused on a global), POP
    verdict, _taken = same_with_and_without(splice(data, first.end(), build_on_it), sizes)
    paths = {(kind, path) for kind, path, *_ in verdict[2]}
    assert ("unsupported-operation", "root['c']") in paths  # REDUCE passed it on to "c"


def test_every_record_after_a_global_was_flagged_is_the_interpreters() -> None:
    """The first object built from a flagged global takes its finding over (the global's own
    list is emptied): the records after it still call a refused global, each its own finding."""
    data, sizes = saved({name: torch.ones(2) for name in "abcde"})
    first = records(data)[0]
    index = first.group(1)[1]
    build_on_it = b"h" + bytes([index]) + b"Nb0"  # GET, NONE, BUILD (refused on a global), POP
    verdict, taken = same_with_and_without(splice(data, first.end(), build_on_it), sizes)
    assert taken == 1  # "b" only
    paths = {path for kind, path, *_ in verdict[2] if kind == "unsupported-operation"}
    assert paths == {"root['c']", "root['d']", "root['e']"}  # (and POP: torch has none)


def test_a_parameter_whose_rebuild_global_had_items_set_is_the_interpreters(
    small_parameter_pickle,
) -> None:
    """Found by the mutation test below: the first record's argument TUPLE turned SETITEMS
    flags `_rebuild_tensor_v2` itself; the next record takes the finding over, and the fast
    path took the two after it as clean."""
    data, sizes = small_parameter_pickle
    assert data[194:195] == b"t"  # the first Parameter's tensor arguments
    verdict, taken = same_with_and_without(splice(data[:194], 194, b"u") + data[195:], sizes)
    assert taken == 0
    assert len(verdict[2]) == 5


def test_internals_of_a_skipped_record_read_back_later_have_their_paths() -> None:
    data, sizes = three_tensors()
    first = records(data)[0]
    size_tuple = first.group(12)  # the PUT of record "b"'s size tuple
    index = size_tuple[1] if size_tuple[:1] == b"q" else struct.unpack("<I", size_tuple[1:])[0]
    append_to_it = b"j" + struct.pack("<I", index) + b"Na0"  # GET, NONE, APPEND (onto a tuple)
    at = len(data) - 2  # before the final SETITEMS and STOP
    verdict, taken = same_with_and_without(splice(data, at, append_to_it), sizes)
    assert taken == 2
    paths = {(kind, path) for kind, path, *_ in verdict[2]}
    assert ("unsupported-operation", "root['b'](args)[2]") in paths


def test_a_lying_storage_size_mid_file_is_caught_at_its_path() -> None:
    data, sizes = three_tensors()
    key = records(data)[1].group(4)[5:].decode()  # record "c"'s storage key
    verdict, taken = same_with_and_without(data, {**sizes, key: 4})
    assert taken == 1
    assert [(kind, path) for kind, path, *_ in verdict[2]] == [
        ("bad-persistent-id", "root['c'](args)[0]")
    ]


@pytest.fixture(scope="module")
def small_state_pickle() -> tuple[bytes, dict[str, int]]:
    base = torch.arange(6.0)
    return saved({"w": torch.ones(2, 2), "v": base, "view": base[1:4], "n": torch.arange(2)})


@pytest.fixture(scope="module")
def small_parameter_pickle() -> tuple[bytes, dict[str, int]]:
    base = torch.arange(6.0)
    return saved(
        {
            "w": torch.nn.Parameter(torch.ones(2, 2)),
            "v": torch.nn.Parameter(base),
            "view": torch.nn.Parameter(base[1:4], requires_grad=False),
            "n": torch.nn.Parameter(torch.arange(2), requires_grad=False),
            "t": torch.ones(2),
        }
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_parameter_pickles_get_the_same_answer(small_parameter_pickle, data) -> None:
    """Flip bytes in a state dict of Parameters: the fast path says what the interpreter
    says, stage 2 included."""
    pickle_bytes, sizes = small_parameter_pickle
    same_with_and_without(flipped_bytes(data, pickle_bytes), sizes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_pickles_get_the_same_answer(small_state_pickle, data) -> None:
    """Flip bytes anywhere: whatever the interpreter says, the fast path says too."""
    pickle_bytes, sizes = small_state_pickle
    same_with_and_without(flipped_bytes(data, pickle_bytes), sizes)


def memo_index(op: bytes) -> int:
    return op[1] if op[:1] in (b"q", b"h") else struct.unpack("<I", op[1:])[0]


def test_a_record_reading_a_skipped_records_internals_is_left_to_the_interpreter() -> None:
    data, sizes = three_tensors()
    b, c = records(data)
    location = c.group(7)  # record "c" reads its location: point it at "b"'s size tuple
    size_tuple = memo_index(b.group(12))
    edited = data[: c.start(7)] + b"h" + bytes([size_tuple]) + data[c.start(7) + len(location) :]
    verdict, taken = same_with_and_without(edited, sizes)
    assert verdict == ("ok", 3, [], True)  # a tuple as a location: torch's to judge
    assert taken == 1  # "b" only: a replay of "c" would have to build "b" first


def test_a_record_overwriting_what_others_read_sends_the_next_to_the_interpreter() -> None:
    data, sizes = saved({name: torch.ones(2) for name in "abcd"})
    b, c, _d = records(data)
    rebuild = memo_index(b.group(1))
    stride = c.group(14)  # record "c" memoises its stride over the rebuild function
    edited = data[: c.start(14)] + b"q" + bytes([rebuild]) + data[c.start(14) + len(stride) :]
    verdict, taken = same_with_and_without(edited, sizes)
    assert taken == 1  # "b"; "c" writes a guarded entry, "d" calls a tuple
    paths = {(kind, path) for kind, path, *_ in verdict[2]}
    assert ("unsupported-operation", "root['d']") in paths


def test_a_tensor_memoised_over_what_others_read_sends_the_next_to_the_interpreter() -> None:
    data, sizes = saved({name: torch.ones(2) for name in "abcd"})
    b, c, _d = records(data)
    rebuild = memo_index(b.group(1))
    tensor = c.group(19)  # record "c" memoises the tensor itself over the rebuild function
    edited = data[: c.start(19)] + b"q" + bytes([rebuild]) + data[c.start(19) + len(tensor) :]
    verdict, taken = same_with_and_without(edited, sizes)
    assert taken == 1  # "b"; "c" writes a guarded entry, "d" calls a tensor
    paths = {(kind, path) for kind, path, *_ in verdict[2]}
    assert ("unsupported-operation", "root['d']") in paths


def test_every_entry_of_a_state_dict_is_taken_with_its_name(monkeypatch) -> None:
    """Names are read by their declared length, so a 1-byte PUT whose index is a letter
    ("q" + "V") is not mistaken for part of the name (which sent entries to the slow path)."""
    from pytest_ckpt.audit import verdict as interpreter

    taken_with_names = []
    original = interpreter.take_tensor_records

    def spy(interp: PickleInterpreter, pos: int, *, named: bool) -> int | None:
        before = interp.records_taken
        after = original(interp, pos, named=named)
        if named:
            taken_with_names.append(interp.records_taken - before)
        return after

    monkeypatch.setattr(interpreter, "take_tensor_records", spy)
    data, sizes = saved({f"blocks.{i}.weight": torch.ones(1) for i in range(120)})
    verdict, taken = same_with_and_without(data, sizes)
    assert verdict == ("ok", 120, [], False) and taken == 119  # the first names its globals
    assert sum(taken_with_names) == 119


@pytest.fixture(scope="module")
def memo_index_bytes() -> tuple[bytes, dict[str, int], list[int], int]:
    """A state dict pickle, where its 1-byte GET/PUT indices sit, and the highest index."""
    base = torch.arange(6.0)
    data, sizes = saved({"a": torch.ones(2), "b": base, "c": base[1:4], "d": torch.ones(3)})
    return (data, sizes, *memo_index_sites(data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rewired_memo_indices_get_the_same_answer(memo_index_bytes, data) -> None:
    """Point GETs and PUTs at other memo entries: records reading what others wrote,
    overwriting what others read, reading what was never set."""
    pickle_bytes, sizes, positions, highest = memo_index_bytes
    same_with_and_without(rewired(data, pickle_bytes, positions, highest), sizes)
