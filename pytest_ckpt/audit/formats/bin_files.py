"""Is a `.bin` file a checkpoint at all? `pytorch_model.bin` and `training_args.bin` are,
but so is every raw array `numpy.tofile` writes, every tokenizer table and any other bytes
named `.bin`. Reporting those "unreadable" (exit 2) fails every commit that touches one, so
a `.bin` that nothing reads as a checkpoint is "not a checkpoint" (skipped, exit 0). A
`.pt`, `.pth` or `.ckpt` claims to be a checkpoint and stays unreadable when it is not.

This module decides for a `.bin` that is not a zip, safetensors or a pickle with a protocol
header (2 to 5): those are audited anyway. What is left is audited when it is a tar (torch's
legacy tar format) or when pickle, reading it as a headerless pickle (protocols 0 and 1),
could reach an import (GLOBAL or INST of two UTF-8 lines, STACK_GLOBAL) or the legacy magic
number before failing. The opcodes that call (REDUCE, BUILD, OBJ, NEWOBJ) need a callable
that only an import puts on the stack, and copyreg's extension registry (EXT1/2/4) is
empty: bytes that fail before an import run nothing under `pickle.load` or `torch.load`,
with or without `weights_only`, and torch refuses them.
"""

from __future__ import annotations

import os

from pytest_ckpt.audit.formats.legacy import LEGACY_MAGIC, is_tar
from pytest_ckpt.audit.opcodes import (
    LINE_IMPORTS,
    NO_VALUE,
    STACK_IMPORT,
    STOP,
    decode_at,
    length_prefix,
)
from pytest_ckpt.errors import MalformedPickle, TruncatedPickle

NOT_A_CHECKPOINT = "not a checkpoint"
PROBE_BYTES = 1 << 16  # random bytes fail as a pickle within a few opcodes
_LONG4 = 0x8B  # the opcode byte of LONG4


def is_checkpoint_bin(path: str | os.PathLike[str], size: int) -> bool:
    """Whether a `.bin` of `size` bytes, not a zip, safetensors or a pickle with a protocol
    header, could still be read as a checkpoint (see the module docstring); False means
    nothing reads it as one (or True where it cannot be read: the auditor says why)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(PROBE_BYTES)
    except OSError:
        return True

    def read_at(offset: int, n: int) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(n)

    return may_unpickle(head, size) or is_tar(read_at, size)


def may_unpickle(head: bytes, size: int) -> bool:
    """Whether pickle, reading a file of `size` bytes that starts with `head`, could reach
    an import, or a whole pickle of the legacy magic number, before it fails."""
    pos = 0
    values: list[object] = []  # decoded opcode arguments, compared with the magic
    try:
        while True:
            op, pos = decode_at(head, pos)
            if op.name in LINE_IMPORTS:
                return _importable_names(head[op.offset + 1 : pos])
            if op.name == STACK_IMPORT:
                return True
            if op.name == STOP:
                return values == [LEGACY_MAGIC]
            if op.name not in NO_VALUE and len(values) < 2:  # two are not the magic alone
                values.append(op.arg)
    except TruncatedPickle:
        fits = _declared_length_fits(head, pos, size)
        return fits if fits is not None else len(head) < size
    except MalformedPickle:  # pickle fails there too, but for the decoder's bound on LONG4
        return head[pos] == _LONG4 and bool(_declared_length_fits(head, pos, size))


def _importable_names(lines: bytes) -> bool:
    """Whether pickle passes GLOBAL's or INST's two lines to `find_class`, which imports the
    module: each must be UTF-8 and not empty (any other name may be a file on sys.path)."""
    try:
        module, name = lines.decode("utf-8").split("\n")[:2]
    except (UnicodeDecodeError, ValueError):
        return False
    return bool(module) and bool(name)


def _declared_length_fits(head: bytes, pos: int, size: int) -> bool | None:
    """For a length-prefixed opcode at `pos` (BINBYTES, BINUNICODE, LONG4, ...): whether the
    bytes it declares lie inside the file; None for any other opcode."""
    prefix = length_prefix(head[pos]) if pos < len(head) else None
    if prefix is None:
        return None
    width, signed = prefix
    if pos + 1 + width > len(head):
        return len(head) < size
    declared = int.from_bytes(head[pos + 1 : pos + 1 + width], "little", signed=signed)
    return 0 <= declared <= size - (pos + 1 + width)
