"""The fast `.metadata` proof against the general scan: on genuine and byte-mutated metadata
(GETs pointed elsewhere, class names and opcodes changed, bytes flipped, truncations),
`scan_metadata` with the proof gives exactly the general scan's answer, the proof never
calls clean what the general scan refuses, and the harness itself fails when the proof (or
one of its records) is forced to accept."""

from __future__ import annotations

import pickletools
import random
import warnings
from pathlib import Path

import pytest
import torch

from pytest_ckpt.audit.formats.dcp import metadata_records, metadata_scan
from pytest_ckpt.audit.formats.dcp.metadata_allowlist import load_dcp_allowlist
from pytest_ckpt.audit.formats.dcp.metadata_proof import proof_memo, proves_clean
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
        if proves_clean(data, allowlist.static) and general != ("findings", []):
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


@pytest.fixture(scope="module")
def genuine(fsdp2_folder, tmp_path_factory) -> dict[str, bytes]:
    single = _single_process_metadata(tmp_path_factory.mktemp("proof") / "single")
    return {"single": single, "fsdp2": (fsdp2_folder[0] / ".metadata").read_bytes()}


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


def test_genuine_metadata_is_proven_clean_by_records(genuine) -> None:
    allowlist = load_dcp_allowlist().static
    for data in genuine.values():
        fast, slow = proof_memo(data, allowlist), proof_memo(data, allowlist, records=False)
        assert fast is not None and fast == slow  # records leave the loop's very memo
        assert metadata_scan.scan_metadata_general(data, load_dcp_allowlist()) == []


def test_the_proof_gives_the_general_answer_on_every_mutant(cases, general) -> None:
    assert disagreements(cases, general) == []
    allowlist = load_dcp_allowlist().static
    proven = [name for name, data in cases.items() if proves_clean(data, allowlist)]
    refused = len(cases) - len(proven)
    assert len(proven) > 40 and refused > 100  # both answers are exercised


def test_the_harness_fails_when_the_proof_is_forced_to_accept(cases, general, monkeypatch) -> None:
    monkeypatch.setattr(metadata_scan, "proves_clean", lambda data, allow: True)
    assert disagreements(cases, general)


def test_the_harness_fails_when_a_record_skips_its_class_check(cases, general, monkeypatch) -> None:
    monkeypatch.setattr(
        metadata_records, "newobj_result", lambda allow, cls: getattr(cls, "name", "x")
    )
    found = disagreements(cases, general)
    assert any("-get@" in line for line in found)  # a GET pointed at a key string


def test_a_clean_metadata_never_runs_the_machine(genuine, monkeypatch) -> None:
    """The speed: a clean .metadata costs no symbolic run (4096 tensors: 270k opcodes)."""

    def no_machine(*args, **kwargs):
        raise AssertionError("the general scan ran on a clean .metadata")

    monkeypatch.setattr(metadata_scan, "DcpMetadataInterpreter", no_machine)
    for data in genuine.values():
        assert metadata_scan.scan_metadata(data, load_dcp_allowlist()) == []
