"""The non-zip formats, read the way torch.load reads them, bounded: the legacy format, the
legacy tar format, and raw pickles (which torch refuses).

torch.load on a file that is not a zip archive first tries `tarfile.open` (a legacy .tar
checkpoint, refused under weights_only), then reads five pickles in a row (magic number,
protocol version, sys_info, the object, the storage keys) and after them one size record and
the bytes of each storage. Only the pickles are read into memory, growing the read until they
are whole (never past `MAX_PICKLE_BYTES`); the size records are for `oracle.legacy_refusal`,
which reads 8 bytes each through `ReadAt`; tensor bytes are never read.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable

from pytest_ckpt.audit.machine import PickleMachine
from pytest_ckpt.audit.opcodes import MalformedPickle, Op, TruncatedPickle, end_of_pickle
from pytest_ckpt.errors import Unreadable

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_PICKLE_BYTES = 256 << 20  # the most pickle bytes the auditor reads or inflates
_FIRST_READ = 1 << 16
_HEADER_BYTES = 4096  # the longest magic-number or protocol pickle the auditor evaluates
_TAR_HEADER_READ = 1 << 20  # tarfile reads the first member's headers; bounded here

ReadAt = Callable[[int, int], bytes]  # read_at(offset, n) -> at most n bytes


def read_pickles(read_at: ReadAt, size: int, *, regular_file: bool) -> tuple[str, bytes, list]:
    """(format, the pickle bytes, the start offset of each pickle) of a non-zip file.

    `format` is "legacy-tar", "legacy" (five pickles) or "raw-pickle" (one). Raises
    Unreadable for anything torch cannot read as either. `regular_file`: torch only tries the
    tar reader on real files (not on a stream)."""
    if regular_file and is_tar(read_at, size):
        return "legacy-tar", b"", []
    want = _FIRST_READ
    while True:
        data = read_at(0, min(want, size))
        try:
            return _split(data)
        except TruncatedPickle as err:
            if len(data) >= size:
                raise Unreadable(f"truncated: {err}") from None
            if want >= MAX_PICKLE_BYTES:
                raise Unreadable(
                    f"the pickles of this file run past {MAX_PICKLE_BYTES >> 20} MiB, the "
                    "auditor's bound: refusing"
                ) from None
            want *= 4


def _split(data: bytes) -> tuple[str, bytes, list]:
    """Raises TruncatedPickle when `data` ends inside a pickle it needs."""
    first = _first_value(data)
    if first != LEGACY_MAGIC:
        try:
            end = end_of_pickle(data, 0)
        except MalformedPickle as err:
            raise Unreadable(
                f"not a checkpoint (neither a zip archive nor a pickle): {err}"
            ) from None
        return "raw-pickle", data[:end], [0]
    starts = [0]
    try:
        for _ in range(5):
            starts.append(end_of_pickle(data, starts[-1]))
    except MalformedPickle as err:
        raise Unreadable(f"legacy checkpoint with a corrupt pickle: {err}") from None
    if _first_value(data, starts[1]) != LEGACY_PROTOCOL:
        raise Unreadable("legacy checkpoint with an unknown protocol version")
    return "legacy", data[: starts[-1]], starts[:-1]


class _NotANumber(Exception):
    """A header pickle builds something other than numbers: not the legacy header."""


class _HeaderMachine(PickleMachine):
    """The machine with only what every semantics means alike (numbers, None, booleans, marks,
    the protocol) and the memo: enough for the legacy headers, which hold one number each."""

    INLINE = True  # the memo's writes and reads, as torch's unpickler runs them

    def unsupported(self, op: Op) -> Exception:
        return _NotANumber()


def _first_value(data: bytes, start: int = 0) -> object:
    """The value of a pickle of numbers (the legacy header: torch.load compares it with the
    magic number and the protocol version) as torch's unpickler builds it, memo and all:
    what the pickle's end takes from the top of the stack. None for any other pickle, and
    for one longer than `_HEADER_BYTES` (torch.save writes 15 bytes; the bound keeps the
    stack small)."""
    window = data[: start + _HEADER_BYTES]
    try:
        return _HeaderMachine(window, start=start).execute()
    except (_NotANumber, MalformedPickle):
        return None  # the raw-pickle path, or the protocol check, says what is wrong
    except TruncatedPickle:
        if len(window) < len(data):
            return None
        raise


def is_tar(read_at: ReadAt, size: int) -> bool:
    """Does torch's `tarfile.open(fileobj=f, mode="r:", format=PAX_FORMAT)` succeed? Run on
    the first MiB only: headers that need more are taken as not a tar (tarfile would read
    them whole)."""
    head = read_at(0, min(size, _TAR_HEADER_READ))
    try:
        with tarfile.open(fileobj=io.BytesIO(head), mode="r:", format=tarfile.PAX_FORMAT):
            return True
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError):
        return False
