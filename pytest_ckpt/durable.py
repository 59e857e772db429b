"""Durable file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(
    directory: Path,
    final: Path,
    write: Callable[[Any], None],
    *,
    check: Callable[[Path], None] | None = None,
    overwrite: bool = True,
) -> None:
    """Write via a temp file in `directory`, fsync, then move it onto `final`.

    `check(temp_path)` runs on the complete temp file before the move: if it raises, the temp
    file is removed and `final` is untouched. With `overwrite=False` the move is a hard link
    that fails with FileExistsError when `final` exists (no window where it is replaced).
    """
    # Not a `with` block: the file must outlive it to be renamed into place.
    handle = tempfile.NamedTemporaryFile(dir=directory, prefix=".tmp-", delete=False)  # noqa: SIM115
    temp = Path(handle.name)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if check is not None:
            check(temp)
        if overwrite:
            os.replace(temp, final)
        else:
            os.link(temp, final)
            temp.unlink()
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
