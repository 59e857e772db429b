"""Is a `.bin` file a checkpoint at all? `pytorch_model.bin` and `training_args.bin` are,
but so is every raw array `numpy.tofile` writes, every tokenizer table and any other bytes
named `.bin`. Reporting those "unreadable" (exit 2) fails every commit that touches one, so
a `.bin` that nothing reads as a checkpoint is "not a checkpoint" (skipped, exit 0). A
`.pt`, `.pth` or `.ckpt` claims to be a checkpoint and stays unreadable when it is not.

This module decides for a `.bin` that is not a zip, safetensors or a pickle with a protocol
header (2 to 5): those are audited anyway. What is left is audited when it is a tar that
holds the `storages` member torch's legacy tar reader extracts first (a run of zeros is an
empty tar to `tarfile`, and torch fails on it with a KeyError), or when pickle, reading it
as a headerless pickle (protocols 0 and 1), could reach an import (of two non-empty UTF-8
names) or a whole pickle of the legacy magic number before failing
(`opcodes.headerless_reach`, which runs the stack and memo symbolically: bytes that
underflow the stack fail there). Calls need a callable that only an import puts on the
stack, and copyreg's extension registry is empty: bytes that fail before an import run
nothing under `pickle.load` or `torch.load`, with or without `weights_only`, and torch
refuses them.
"""

from __future__ import annotations

import io
import os
import tarfile

from pytest_ckpt.audit.formats.legacy import LEGACY_MAGIC
from pytest_ckpt.audit.opcodes import UNKNOWN, headerless_reach

NOT_A_CHECKPOINT = "not a checkpoint"
PROBE_BYTES = 1 << 16  # random bytes fail as a pickle within a few opcodes
MAX_PROBE_BYTES = 16 << 20  # a pickle that reads on past this is taken to be one
_TAR_READ = 1 << 20  # the member headers read to find torch's "storages" member


def is_checkpoint_bin(path: str | os.PathLike[str], size: int) -> bool:
    """Whether a `.bin` of `size` bytes, not a zip, safetensors or a pickle with a protocol
    header, could still be read as a checkpoint (see the module docstring); False means
    nothing reads it as one (or True where it cannot be read: the auditor says why).

    Reads 1 MiB, and more (up to `MAX_PROBE_BYTES`) only while pickle would go on past it."""
    want = PROBE_BYTES
    try:
        with open(path, "rb") as handle:
            head = handle.read(_TAR_READ)
            if _may_be_legacy_tar(head, size):
                return True
            while True:
                verdict = _pickle_verdict(head[:want], size)
                if verdict is not None or want >= MAX_PROBE_BYTES:
                    return verdict is not False
                want *= 4
                if want > len(head):
                    head += handle.read(want - len(head))
    except OSError:
        return True


def may_unpickle(head: bytes, size: int) -> bool:
    """Whether pickle, reading a file of `size` bytes that starts with `head`, could reach
    an import, or a whole pickle of the legacy magic number, before it fails."""
    return _pickle_verdict(head, size) is not False


def _pickle_verdict(head: bytes, size: int) -> bool | None:
    """`may_unpickle`, or None where pickle reads on past `head` (the file holds more)."""
    reach = headerless_reach(head)
    if reach.kind == "import":
        return reach.detail is None or _importable_names(reach.detail)
    if reach.kind == "stop":
        return reach.detail is UNKNOWN or bool(reach.detail == LEGACY_MAGIC)
    if reach.kind == "needs":
        return None if len(head) < reach.detail <= size else reach.detail <= size
    return False


def _importable_names(lines: bytes) -> bool:
    """Whether pickle passes an import's two lines to `find_class`, which imports the
    module: each must be UTF-8 and not empty (any other name may be a file on sys.path)."""
    try:
        module, name = lines.decode("utf-8").split("\n")[:2]
    except (UnicodeDecodeError, ValueError):
        return False
    return bool(module) and bool(name)


class _PastHead(Exception):
    """tarfile asked for bytes past those read (the file holds them, `head` does not)."""


class _Head(io.BytesIO):
    """The first bytes of a longer file, as tarfile reads them: a read that runs past them
    raises `_PastHead` instead of coming back short, which tarfile would take for the end
    of the archive ("unexpected end of data", a truncated header) where torch's reader,
    on the whole file, goes on."""

    def __init__(self, head: bytes, size: int) -> None:
        super().__init__(head)
        self._cut = len(head) if len(head) < size else None

    def read(self, n: int | None = -1) -> bytes:
        if self._cut is not None and (n is None or n < 0 or self.tell() + n > self._cut):
            raise _PastHead
        return super().read(n)


def _may_be_legacy_tar(head: bytes, size: int) -> bool:
    """Whether torch's legacy tar reader gets past its first step, `tar.extract("storages")`:
    `tarfile` opens the bytes (a run of zeros is an empty tar) and lists a member of that
    name, or the listing reads past `head` (a member torch would see may lie beyond)."""
    try:
        with tarfile.open(fileobj=_Head(head, size), mode="r:", format=tarfile.PAX_FORMAT) as tar:
            names = tar.getnames()
    except _PastHead:
        return True
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError):
        return False
    return any(os.path.normpath(name) == "storages" for name in names)
