"""`headerless_reach` on number literals the auditor's decoder refuses and pickle reads: C
pickle parses INT and LONG lines with `strtol`/`PyLong_FromString` in base 0 (`0x10`,
`0o7`), stops at a NUL (`5\\0junk`), reads PUT and GET keys up to a NUL, FLOAT lines up to
a NUL, and a LONG4 of any length. Pickle goes on past each, so an import after one runs:
held against the real loader in a subprocess (torch.load runs the payload)."""

from __future__ import annotations

import struct

from pytest_ckpt.audit.formats.bin_files import is_checkpoint_bin, may_unpickle
from pytest_ckpt.audit.formats.legacy import LEGACY_MAGIC
from tests.audit.test_bin_files import what_readers_do
from tests.audit.test_bin_files_past_probe import markers_left, payload

LONG = (1 << 20) + 1  # bytes of a LONG4 the decoder will not turn into an int
PREFIXES = {
    "int_hex": b"I0x10\n0",
    "int_octal": b"I0o7\n0",
    "int_nul": b"I5\x00junk\n0",
    "long_hex": b"L0x10L\n0",
    "float_nul": b"F1.5\x00x\n0",
    "put_nul": b"N" + b"p5\x00x\n0",
    "get_nul": b"Np5\n0g5\x00x\n0",
    "long4_past_our_bound": b"\x8b" + struct.pack("<i", LONG) + b"\x01" * LONG + b"0",
}  # fmt: skip


def test_an_import_after_a_literal_pickle_reads_is_a_checkpoint(tmp_path) -> None:
    paths = []
    for name, prefix in PREFIXES.items():
        paths.append(tmp_path / f"{name}.bin")
        paths[-1].write_bytes(prefix + payload(name))
    assert markers_left(tmp_path, paths) == set(PREFIXES)  # torch runs each one's payload
    called = {path.stem: is_checkpoint_bin(path, path.stat().st_size) for path in paths}
    assert called == dict.fromkeys(PREFIXES, True)


def test_a_legacy_magic_number_written_in_hex_is_a_checkpoint() -> None:
    """torch reads the magic number as the first pickle's value, then unpickles on."""
    magic = b"I" + hex(LEGACY_MAGIC).encode() + b"\n."
    assert may_unpickle(magic, len(magic))
    assert not may_unpickle(b"I5\n.", 4)  # any other number: torch stops at the magic


def test_literals_the_symbolic_run_cannot_read_never_skip_an_import() -> None:
    """Every literal prefix with every ending, against pickle's own `find_class` (an audit
    hook refuses it: nothing is imported)."""

    texts = [b"5", b"0x10", b"5\x00z", b" 7", b"1_0", b"00", b"01", b"0o7", b"0b1", b"1.5\x00q",
             b"nan", b"9" * 5000, b"0x" + b"f" * 5000, b"", b"-1"]  # fmt: skip
    prefixes = [op + text + b"\n" for op in (b"I", b"L", b"F", b"p", b"g") for text in texts]
    prefixes += [b"N" + prefix for prefix in prefixes]
    stack_global = b"X\x02\x00\x00\x00osX\x06\x00\x00\x00getcwd\x93"
    endings = [b"0cos\ngetcwd\n", b"cos\ngetcwd\n", stack_global]
    blobs = [prefix + ending for prefix in prefixes for ending in endings]
    readers = what_readers_do(blobs)
    wrong = [
        blob
        for blob, (imported, _) in zip(blobs, readers, strict=True)
        if imported and not may_unpickle(blob, len(blob))
    ]
    assert wrong == []
    assert sum(imported for imported, _ in readers) > len(blobs) // 3
