"""Item templates against torch's archive reader: for every mutant of a DCP tensor item
(bytes flipped in its data, its CRCs, its directory, its data.pkl, its serialization id),
`ItemTemplates.open` gives exactly what `open_checkpoint` (torch's reader) gives, items that
differ only in their data are answered from the template, and the harness fails when the
template is forced to answer."""

from __future__ import annotations

import io
import random
import tempfile
import warnings
import zlib
from pathlib import Path

import pytest
import torch

from pytest_ckpt.audit.formats.dcp import item_templates
from pytest_ckpt.audit.formats.dcp.folder import audit_dcp_folder
from pytest_ckpt.audit.formats.dcp.item_templates import ItemTemplates
from pytest_ckpt.audit.formats.dcp.items import FileSlice
from pytest_ckpt.audit.formats.torch_archive import open_checkpoint
from pytest_ckpt.errors import Unreadable


def _items(folder: Path) -> list[bytes]:
    from tests.distributed.conftest import read_metadata

    metadata = read_metadata(folder)
    shard = (folder / "__0_0.distcp").read_bytes()
    return [
        shard[info.offset : info.offset + info.length] for info in metadata.storage_data.values()
    ]


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> dict[str, list[bytes]]:
    """Items of one shape: small ones (one block holds all) and 64 KB ones (head and tail)."""
    import torch.distributed.checkpoint as dcp

    found = {}
    for name, numel in (("small", 16), ("large", 16384)):
        folder = tmp_path_factory.mktemp("items") / name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.save({f"t{i}": torch.randn(numel) for i in range(4)}, checkpoint_id=folder)
        found[name] = _items(folder)
    return found


def _slice(data: bytes) -> FileSlice:
    return FileSlice(io.BytesIO(data), 0, len(data), name="item")


def _answer(open_item, data: bytes) -> tuple:
    try:
        checkpoint = open_item(_slice(data))
    except Unreadable as err:
        return ("unreadable", str(err))
    return (checkpoint.format, checkpoint.pickle, checkpoint.storage_sizes, checkpoint.notes)


def _with_crc(data: bytes, start: int, length: int, fields: list[int]) -> bytes:
    """`data` with the CRC fields of the record at `start` set to its CRC (consistent)."""
    crc = zlib.crc32(data[start : start + length]).to_bytes(4, "little")
    for where in fields:
        data = data[:where] + crc + data[where + 4 :]
    return data


def _mutants(template: bytes, other: bytes, rng: random.Random) -> dict[str, bytes]:
    mutants = {"genuine": other}
    length = len(other)
    head, tail = min(FileSlice.BLOCK, length), max(0, length - FileSlice.BLOCK)
    edges = rng.sample(range(min(800, length)), 40) + rng.sample(range(length - 800, length), 40)
    data = rng.sample(range(head), 5) + rng.sample(range(tail, length), 5)  # payload, mostly
    for pos in edges + data:  # headers, data.pkl, descriptors, the directory; the data
        mutants[f"flip@{pos}"] = other[:pos] + bytes([other[pos] ^ 0x24]) + other[pos + 1 :]
    marker = b"serialization_id"
    start = other.rfind(b"Z" * 4, 0, other.find(b"PK\x07\x08", other.find(marker))) + 4
    id_length = other.find(b"PK\x07\x08", start) - start
    new_id = b"9" * id_length
    rewritten = other[:start] + new_id + other[start + id_length :]
    mutants["id-rewritten-crc-stale"] = rewritten
    entry = rewritten.rfind(b"PK\x01\x02", 0, rewritten.rfind(marker))
    descriptor = start + id_length + 4
    mutants["id-rewritten-crc-fixed"] = _with_crc(
        rewritten, start, id_length, [entry + 16, descriptor]
    )
    mutants["truncated"] = other[: length // 2]
    mutants["template-itself"] = template
    return mutants


def _after_template(template: bytes, data: bytes, between: bytes) -> tuple[tuple, int]:
    """(the templates' answer for `data` lying after an item of the template's in one file,
    `between` them, so that its head is (or, past `between`, is not) what that item's read
    went on into; items proven)."""
    with tempfile.TemporaryFile() as handle:
        handle.write(template + template + between + data)
        handle.flush()
        templates = ItemTemplates()
        for at in (0, len(template)):  # the template, then an item proven from it
            templates.open(FileSlice(handle, at, len(template), name="template"))
        before = templates.proven
        at = 2 * len(template) + len(between)
        try:
            checkpoint = templates.open(FileSlice(handle, at, len(data), name="x"))
        except Unreadable as err:
            return ("unreadable", str(err)), templates.proven - before
        answer = (checkpoint.format, checkpoint.pickle, checkpoint.storage_sizes, checkpoint.notes)
        return answer, templates.proven - before


def disagreements(items: dict[str, list[bytes]]) -> tuple[list[str], int]:
    """(mutants where the templates' answer is not torch's reader's, how many were proven),
    each mutant opened on its own and right after an item of its template's in one file."""
    rng = random.Random(7)
    found, proven = [], 0
    for name, (template, other, *_rest) in items.items():
        for label, data in _mutants(template, other, rng).items():
            templates = ItemTemplates()
            templates.open(_slice(template))  # torch's reader opens it: the template
            before = templates.proven
            answer = _answer(templates.open, data)
            proven += templates.proven - before
            reader = _answer(open_checkpoint, data)
            if answer != reader:
                found.append(f"{name}-{label}")
            for between in (b"", other):
                answer, proven_after = _after_template(template, data, between)
                proven += proven_after
                if answer != reader:
                    found.append(f"{name}-{label} (after its template, {len(between)} apart)")
    return found, proven


def test_items_that_differ_only_in_data_are_proven_from_the_template(items) -> None:
    for same_shape in items.values():
        templates = ItemTemplates()
        answers = [templates.open(_slice(item)) for item in same_shape]
        assert templates.proven == len(same_shape) - 1
        reader = [open_checkpoint(_slice(item)) for item in same_shape]
        assert [(a.pickle, a.storage_sizes) for a in answers] == [
            (r.pickle, r.storage_sizes) for r in reader
        ]


def test_the_templates_give_torchs_answer_on_every_mutant(items) -> None:
    found, proven = disagreements(items)
    assert found == []
    assert proven > 40  # mutants in the data, CRCs and a consistent id are proven


def test_the_harness_fails_when_the_template_is_forced_to_answer(items, monkeypatch) -> None:
    monkeypatch.setattr(item_templates, "_matches", lambda *args: True)
    found, _proven = disagreements(items)
    assert found


def test_a_folder_with_a_tampered_item_pickle_is_still_found(tmp_path) -> None:
    import torch.distributed.checkpoint as dcp

    folder = tmp_path / "folder"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({f"t{i}": torch.randn(8) for i in range(6)}, checkpoint_id=folder)
    shard = folder / "__0_0.distcp"
    data = shard.read_bytes()
    last = data.rfind(b"FloatStorage")  # the last item's data.pkl, same length: int16
    shard.write_bytes(data[:last] + b"ShortStorage" + data[last + 12 :])
    report = audit_dcp_folder(folder)
    # the item's own audit may also refuse the record (its size no longer matches int16)
    dtype = [f for f in report.findings if f.kind == "dcp-dtype"]
    assert len(dtype) == 1 and "torch.int16" in dtype[0].detail, report.findings
