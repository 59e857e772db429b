"""DCP's records on the pickle machine against its run without them: on genuine and
byte-mutated metadata (GETs pointed elsewhere, class names and opcodes changed, bytes
flipped, truncations), `scan_metadata` (records taken whole) gives exactly the general scan's
answer, the run with records never calls clean what the general scan refuses, it leaves the
general run's very memo, and the harness itself fails when a record is taken unchecked."""

from __future__ import annotations

import pickletools
import random
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

from pytest_ckpt.audit import verdict
from pytest_ckpt.audit.formats.dcp import metadata_scan
from pytest_ckpt.audit.formats.dcp.metadata_allowlist import load_dcp_allowlist
from pytest_ckpt.audit.formats.dcp.metadata_scan import DcpMetadataInterpreter, runs_clean
from pytest_ckpt.audit.nodes import Node
from pytest_ckpt.audit.opcodes import Blob
from pytest_ckpt.errors import MalformedPickle, TruncatedPickle


def _outcome(scan, data: bytes) -> tuple:
    try:
        return ("findings", [(f.kind, f.path, f.detail, f.fix) for f in scan(data)])
    except (TruncatedPickle, MalformedPickle) as err:
        return (type(err).__name__, str(err))


def general_outcomes(cases: dict[str, bytes]) -> dict[str, tuple]:
    allowlist = load_dcp_allowlist()
    return {
        name: _outcome(lambda d: metadata_scan.scan_metadata_general(d, allowlist), data)
        for name, data in cases.items()
    }


def disagreements(cases: dict[str, bytes], general_answers: dict[str, tuple]) -> list[str]:
    """Cases where scan_metadata (fast path on) differs from the general scan, or where the
    proof calls clean what the general scan does not."""
    allowlist = load_dcp_allowlist()
    found = []
    for name, data in cases.items():
        general = general_answers[name]
        answer = _outcome(lambda d: metadata_scan.scan_metadata(d, allowlist), data)
        if answer != general:
            found.append(f"{name}: {answer} != {general}")
        if runs_clean(data, allowlist) and general != ("findings", []):
            found.append(f"{name}: proven clean, the general scan says {general}")
    return found


def _single_process_metadata(folder: Path) -> bytes:
    """~60 tensors of several dtypes and ranks (0-d to 5-d): past 256 memo entries (4-byte
    GETs), records of every shape, first records that name their globals inline."""
    import torch.distributed.checkpoint as dcp

    dtypes = (torch.float32, torch.int64, torch.bfloat16, torch.bool, torch.float16)
    shapes = ((), (3,), (2, 3), (1, 2, 2), (1, 1, 2, 1), (1, 1, 1, 2, 1))
    state = {
        f"block{i}.t": torch.zeros(shapes[i % len(shapes)], dtype=dtypes[i % len(dtypes)])
        for i in range(60)
    }
    state["extra"] = {"step": 3, "name": "run", "big": 2**40, "lr": 0.5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=folder)
    return (folder / ".metadata").read_bytes()


def _uniform_metadata(folder: Path) -> bytes:
    """40 tensors of one shape and dtype, as most models' layers are: each tensor record
    repeats the one before it byte for byte."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({f"layer{i}.weight": torch.zeros(4) for i in range(40)}, checkpoint_id=folder)
    return (folder / ".metadata").read_bytes()


@pytest.fixture(scope="module")
def genuine(fsdp2_folder, tmp_path_factory) -> dict[str, bytes]:
    work = tmp_path_factory.mktemp("proof")
    return {
        "single": _single_process_metadata(work / "single"),
        "uniform": _uniform_metadata(work / "uniform"),
        "fsdp2": (fsdp2_folder[0] / ".metadata").read_bytes(),
    }


def _mutants(name: str, data: bytes, rng: random.Random) -> dict[str, bytes]:
    ops = list(pickletools.genops(data))
    gets = [(op, pos) for op, _arg, pos in ops if "GET" in op.name]
    memo_size = sum(op.name == "MEMOIZE" for op, _a, _p in ops)
    mutants: dict[str, bytes] = {}
    for op, pos in rng.sample(gets, min(40, len(gets))):  # a GET pointed at another entry
        width = 1 if op.name == "BINGET" else 4
        index = rng.randrange(min(memo_size, 256 if width == 1 else memo_size))
        new = data[: pos + 1] + index.to_bytes(width, "little") + data[pos + 1 + width :]
        mutants[f"{name}-get@{pos}->{index}"] = new
    for cls in (b"TensorStorageMetadata", b"ChunkStorageMetadata", b"_StorageInfo", b"Size"):
        at = data.find(cls)
        if at >= 0:  # a class renamed (same length): outside DCP's allowlist
            mutants[f"{name}-rename-{cls.decode()}"] = (
                data[:at] + cls[:-1] + b"X" + data[at + len(cls) :]
            )
    for old, new_op in ((b"\x81", b"R"), (b"b", b"a"), (b"\x94", b"Q"), (b"u", b"s")):
        spots = [pos for op, _a, pos in ops if data[pos : pos + 1] == old]
        for pos in rng.sample(spots, min(12, len(spots))):  # one opcode swapped
            mutants[f"{name}-op@{pos}-{old!r}->{new_op!r}"] = data[:pos] + new_op + data[pos + 1 :]
    for pos in rng.sample(range(len(data)), 30):  # one byte flipped
        mutants[f"{name}-flip@{pos}"] = data[:pos] + bytes([data[pos] ^ 0x5A]) + data[pos + 1 :]
    for cut in rng.sample(range(1, len(data)), 8):
        mutants[f"{name}-cut@{cut}"] = data[:cut]
    return mutants


@pytest.fixture(scope="module")
def cases(genuine) -> dict[str, bytes]:
    rng = random.Random(20261202)
    found = dict(genuine)
    for name, data in genuine.items():
        found.update(_mutants(name, data, rng))
    return found


@pytest.fixture(scope="module")
def general(cases) -> dict[str, tuple]:
    """The general scan's answers (no fast path in them: computed once)."""
    return general_outcomes(cases)


def _fingerprint(value: object) -> object:
    """What a memo entry is, as the rules see it: a node's type and shape, a string's
    text, a primitive's value."""
    if isinstance(value, Node):
        return ("node", value.type_name, value.shape, len(value.children))
    if isinstance(value, Blob):
        return ("blob", value.kind, value.preview)
    return value


def _run(data: bytes, *, records: bool = True) -> DcpMetadataInterpreter:
    """The machine after its run (deferred entries and spans as it left them)."""
    machine = DcpMetadataInterpreter(data, load_dcp_allowlist(), records=records)
    machine.execute()
    return machine


def _memo(data: bytes, *, records: bool) -> tuple[DcpMetadataInterpreter, dict[int, object]]:
    """The machine after its run, and what each memo index holds, every deferred entry and
    every index a record left unwritten built (`memo_get`), in index order."""
    machine = _run(data, records=records)
    indices = sorted(set(machine.memo) | set(range(len(machine.memo) + machine.memo_offset)))
    memo: dict[int, object] = {}
    for index in indices:  # all built before any is described: a build fills its object
        try:
            memo[index] = machine.memo_get(index, 0)
        except MalformedPickle:
            memo[index] = "never set"
    return machine, {index: _fingerprint(value) for index, value in memo.items()}


def test_genuine_metadata_runs_clean_with_records_and_leaves_the_same_memo(genuine) -> None:
    for data in genuine.values():
        fast, fast_memo = _memo(data, records=True)
        _slow, slow_memo = _memo(data, records=False)
        assert fast.records is not None and fast.records.taken > 20
        assert fast.records.replays * 3 < fast.records.taken  # each kind run on its own once
        assert fast_memo == slow_memo  # deferred entries replay to the machine's own
        assert runs_clean(data, load_dcp_allowlist())
        assert metadata_scan.scan_metadata_general(data, load_dcp_allowlist()) == []
    single, _memo_entries = _memo(genuine["single"], records=True)
    assert single.records.entries > 20  # planner_data entries (fqn: (fqn,)) taken whole too


def test_records_give_the_general_answer_on_every_mutant(cases, general) -> None:
    assert disagreements(cases, general) == []
    allowlist = load_dcp_allowlist()
    proven = [name for name, data in cases.items() if runs_clean(data, allowlist)]
    refused = len(cases) - len(proven)
    assert len(proven) > 40 and refused > 100  # both answers are exercised


def test_the_harness_fails_when_the_fast_run_is_forced_to_accept(cases, general, monkeypatch):
    monkeypatch.setattr(metadata_scan, "runs_clean", lambda data, allow: True)
    assert disagreements(cases, general)


def test_the_harness_fails_when_a_record_is_taken_unchecked(cases, general, monkeypatch) -> None:
    """A record's verdict is the machine's own run of it: hide that run's findings, and
    the records take what the machine refuses."""
    replay = verdict.PickleInterpreter.replay

    def blind(self, *args, **kwargs):
        run = replay(self, *args, **kwargs)
        run.findings = []
        return run

    monkeypatch.setattr(verdict.PickleInterpreter, "replay", blind)
    found = disagreements(cases, general)
    assert any("-get@" in line for line in found)  # a GET pointed at a key string


def test_a_clean_metadata_runs_the_machine_once(genuine, monkeypatch) -> None:
    """The speed: a clean .metadata costs one run, with records (4096 tensors: 270k opcodes)."""

    def no_general_scan(*args, **kwargs):
        raise AssertionError("the run without records ran on a clean .metadata")

    monkeypatch.setattr(metadata_scan, "scan_metadata_general", no_general_scan)
    for data in genuine.values():
        assert metadata_scan.scan_metadata(data, load_dcp_allowlist()) == []


def _deferred(machine: DcpMetadataInterpreter) -> list[int]:
    """The memo indices a run's records deferred: entries that replay their record, and
    indices left unwritten (`defer_memo`)."""
    found = {i for i, v in machine.memo.items() if isinstance(v, verdict.DeferredRecord)}
    for first, stop in _spans(machine):
        found.update(range(first, stop))
    return sorted(found)


def _planner_entries(data: bytes) -> list[tuple[int, int]]:
    """(offset of its second GET, that GET's width) for each planner_data entry (GET key,
    GET, TUPLE1, MEMOIZE) and the offset of its first GET."""
    ops = [(op.name, pos) for op, _arg, pos in pickletools.genops(data)]
    found = []
    for at in range(len(ops) - 3):
        names = [name for name, _pos in ops[at : at + 4]]
        if (
            names[0].endswith("GET")
            and names[1].endswith("GET")
            and names[2:]
            == [
                "TUPLE1",
                "MEMOIZE",
            ]
        ):
            found.append((ops[at][1], ops[at + 1][1]))
    return found


def test_planner_entries_pointed_anywhere_get_the_general_answer(genuine) -> None:
    """A planner_data entry taken whole is the machine's GET, GET, TUPLE1, MEMOIZE: with its
    GETs pointed at a key, an object, a record's deferred entry or nothing at all, the scan
    with records answers as the general scan does, and where both accept, leaves its memo."""
    data = genuine["single"]
    entries = _planner_entries(data)
    fast = _run(data)
    deferred = _deferred(fast)
    assert len(entries) > 20 and len(deferred) > 100
    memo_size = len(fast.memo) + fast.memo_offset  # unwritten indices counted
    gets = [
        (at, 1 if data[at] == ord("h") else 4)
        for pair in entries[:: max(1, len(entries) // 6)]
        for at in pair
    ]
    targets = (0, 3, 11, *deferred[1:200:40], memo_size - 1, memo_size + 7)
    _assert_retargeted_gets_get_the_general_answer(data, gets, targets)


def _assert_retargeted_gets_get_the_general_answer(
    data: bytes, gets: list[tuple[int, int]], targets: tuple[int, ...]
) -> None:
    """Each GET at (offset, width) pointed at each target memo index: the scan with records
    answers as the general scan does, and where both accept, leaves the same memo."""
    cases = {}
    for at, width in gets:
        for index in targets:
            if index < 256**width:
                patched = index.to_bytes(width, "little")
                cases[f"get@{at}->{index}"] = data[: at + 1] + patched + data[at + 1 + width :]
    general_answers = general_outcomes(cases)
    assert disagreements(cases, general_answers) == []
    clean = [name for name, answer in general_answers.items() if answer == ("findings", [])]
    assert clean and len(clean) < len(cases)  # both answers are exercised
    for name in clean:
        assert _memo(cases[name], records=True)[1] == _memo(cases[name], records=False)[1], name


def _odd_storage_indices(data: bytes) -> dict[str, bytes]:
    """`data`'s Metadata pickled again with some storage_data keys (MetadataIndex records,
    whose fqn strings vary) made odd: an item dropped, an item added, an fqn of bytes or of
    an int, mid-run, after records of the usual shape."""
    import pickle

    from tests.distributed.conftest import read_metadata

    odd = {}
    edits = {
        "no-offset": lambda index: object.__delattr__(index, "offset"),
        "no-index": lambda index: object.__delattr__(index, "index"),
        "extra-int": lambda index: object.__setattr__(index, "extra", 7),
        "extra-none": lambda index: object.__setattr__(index, "extra", None),
        "bytes-fqn": lambda index: object.__setattr__(index, "fqn", index.fqn.encode()),
        "int-fqn": lambda index: object.__setattr__(index, "fqn", 12),
    }
    for name, edit in edits.items():
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, ".metadata").write_bytes(data)
            metadata = read_metadata(Path(folder))
        indices = list(metadata.storage_data)
        for index in indices[len(indices) // 2 :: 7]:
            edit(index)
        odd[name] = pickle.dumps(metadata, protocol=4)
    return odd


def test_storage_keys_of_an_odd_shape_get_the_general_answer(genuine) -> None:
    """A flat record whose strings vary is found by its shape (`metadata_records._shape`):
    records of another shape mid-run (an item fewer or more, an fqn that is not a string)
    get the general scan's answer and, where it accepts, its very memo."""
    cases = _odd_storage_indices(genuine["single"])
    general_answers = general_outcomes(cases)
    assert disagreements(cases, general_answers) == []
    for name, data in cases.items():
        fast, fast_memo = _memo(data, records=True)
        assert fast.records.shapes, name  # the shape was used before the odd records
        if general_answers[name] == ("findings", []):
            assert fast_memo == _memo(data, records=False)[1], name


def _storage_info_gets(data: bytes) -> tuple[int, list[tuple[int, int]]]:
    """(how many _StorageInfo records, the (offset, width) of each GET inside them but
    their class's) in a .metadata: records that read the same entries every time."""
    ops = list(pickletools.genops(data))
    memo, global_index, inside, records, found = 0, None, False, 0, []
    for at, (op, arg, pos) in enumerate(ops):
        if op.name == "STACK_GLOBAL" and ops[at - 2][1] == "_StorageInfo":
            global_index = memo
        if op.name == "MEMOIZE":
            memo += 1
        if "GET" in op.name and arg == global_index and ops[at + 1][0].name == "EMPTY_TUPLE":
            inside, records = True, records + 1
        elif inside and "GET" in op.name:
            found.append((pos, 1 if op.name == "BINGET" else 4))
        elif op.name == "BUILD":
            inside = False
    return records, found


def test_storage_infos_taken_by_their_pinned_shape_get_the_general_answer(genuine) -> None:
    """A flat record that reads the same entries every time (a _StorageInfo) is found by
    its shape with every GET pinned: with one of its GETs pointed at a key, an object, a
    record's deferred entry or nothing, mid-run, the scan with records answers as the
    general scan does and, where both accept, leaves its memo."""
    data = genuine["single"]
    records, gets = _storage_info_gets(data)
    fast = _run(data)
    deferred = _deferred(fast)
    assert records > 20 and fast.records.shapes >= 2  # MetadataIndex's, _StorageInfo's
    assert len(deferred) > 100
    memo_size = len(fast.memo) + fast.memo_offset
    targets = (0, 3, 11, *deferred[1:200:40], memo_size - 1, memo_size + 7)
    _assert_retargeted_gets_get_the_general_answer(
        data, gets[len(gets) // 2 :: max(1, len(gets) // 12)], targets
    )


def _unframed(data: bytes) -> bytes:
    """`data` without its FRAME opcodes (a protocol 4 pickle loads without them), so that
    opcodes can be put in anywhere."""
    frames = [pos for op, _arg, pos in pickletools.genops(data) if op.name == "FRAME"]
    for pos in reversed(frames):
        data = data[:pos] + data[pos + 9 :]
    return data


def test_a_record_repeated_after_a_put_to_an_entry_it_reads_gets_the_general_answer(genuine):
    """Tensor records that repeat byte for byte keep one verdict; a BINPUT between two of
    them that writes over an entry they read (their class's) makes the next one's answer
    the general scan's again: a finding, as the machine gives it, not the verdict kept."""
    data = _unframed(genuine["uniform"])
    cls_get = data.index(b"h\x09)\x81", data.index(b"layer1.weight"))  # a later record
    key_at = data.index(b"layer20.weight")
    after_key = key_at + len(b"layer20.weight") + 1  # past its MEMOIZE
    cases = {
        f"{name}-put@{after_key}": data[:after_key] + put + b"0" + data[after_key:]
        for name, put in (("string", b"\x8c\x01xq\x09"), ("int", b"K\x07q\x09"))
    }
    cases["unchanged"] = data
    assert data[cls_get : cls_get + 2] == b"h\x09"  # the records do read memo 9
    general_answers = general_outcomes(cases)
    assert general_answers["unchanged"] == ("findings", [])
    assert all(general_answers[name][1] for name in cases if "put@" in name)  # refused
    assert disagreements(cases, general_answers) == []


def test_a_put_or_get_into_an_unwritten_span_gets_the_general_answer_and_memo(genuine):
    """A record's later MEMOIZEs are counted, not written (`defer_memo`): a BINPUT that
    writes over one of them, or a GET that reads one, mid-run, builds the record's entries
    first, so every MEMOIZE after it lands where the machine's does (the very memo)."""
    data = _unframed(genuine["uniform"])
    first, stop = _spans(_run(data))[4]  # the fifth tensor record's, long before the edit
    at = data.index(b"layer20.weight") + len(b"layer20.weight") + 1  # past its MEMOIZE
    put = b"\x8c\x01xr" + (first + 1).to_bytes(4, "little") + b"0"  # 'x', LONG_BINPUT, POP
    get = b"j" + (stop - 1).to_bytes(4, "little") + b"0"  # LONG_BINGET, POP
    cases = {
        "put": data[:at] + put + data[at:],
        "get": data[:at] + get + data[at:],
        "put-then-get": data[:at] + put + get + data[at:],
    }
    general_answers = general_outcomes(cases)
    assert all(answer == ("findings", []) for answer in general_answers.values())
    assert disagreements(cases, general_answers) == []
    for name, case in cases.items():
        assert _memo(case, records=True)[1] == _memo(case, records=False)[1], name


def _spans(machine: DcpMetadataInterpreter) -> list[tuple[int, int]]:
    """The memo index spans a run's records left unwritten, in order."""
    spans = zip(machine.span_starts, machine.span_stops, machine.span_records, strict=True)
    return [(first, stop) for first, stop, record in spans if record is not None]
