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

from pytest_ckpt.audit.opcodes import (
    NO_VALUE,
    MalformedPickle,
    TruncatedPickle,
    end_of_pickle,
    iter_ops,
)
from pytest_ckpt.errors import Unreadable

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_PICKLE_BYTES = 256 << 20  # the most pickle bytes the auditor reads or inflates
_FIRST_READ = 1 << 16
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
        end = end_of_pickle(data, 0)
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


def _first_value(data: bytes, start: int = 0) -> object:
    """The value of a pickle that is one integer (the legacy header), else None."""
    values = []
    try:
        for op in iter_ops(data, start):
            if op.name not in NO_VALUE:
                values.append(op.arg)
                if len(values) > 1:
                    return None
    except MalformedPickle as err:
        raise Unreadable(f"not a checkpoint (neither a zip archive nor a pickle): {err}") from None
    return values[0] if len(values) == 1 and isinstance(values[0], int) else None


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
