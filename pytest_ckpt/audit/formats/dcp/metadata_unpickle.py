"""Reading a DCP `.metadata` without running code: the static scan first (`metadata_scan`),
then Python's unpickler restricted to DCP's metadata allowlist (`RestrictedMetadataUnpickler`:
its `find_class` hands out only the allowlist's own objects, it imports nothing, and it has
no `persistent_load`). The folder audit and `distributed.safe_reader` both read through it.
The rank-local `__<rank>.metadata` files `dcp.load` falls back to are scanned here too.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from torch.distributed.checkpoint.metadata import Metadata

from pytest_ckpt.audit.formats.dcp import METADATA, RANK_METADATA
from pytest_ckpt.audit.formats.dcp.metadata_allowlist import DcpAllowlist
from pytest_ckpt.audit.formats.dcp.metadata_scan import scan_metadata
from pytest_ckpt.audit.formats.legacy import MAX_PICKLE_BYTES
from pytest_ckpt.audit.formats.torch_archive import regular_file_size
from pytest_ckpt.audit.nodes import Finding
from pytest_ckpt.audit.opcodes import MalformedPickle, TruncatedPickle
from pytest_ckpt.errors import CheckpointLoadError, Unreadable, UnsafeCheckpointError


class RestrictedMetadataUnpickler(pickle.Unpickler):
    """Python's unpickler with a `find_class` that knows only DCP's metadata allowlist."""

    def __init__(self, file: Any, allowlist: DcpAllowlist, *, source: str) -> None:
        super().__init__(file)
        self.allowlist = allowlist
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        dotted = f"{module}.{name}"
        try:
            return self.allowlist.objects[dotted]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self.source}: refused global {dotted}: not in DCP's metadata allowlist "
                "(nothing from the file was run)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(f"{self.source}: refused a persistent id in DCP metadata")


def unpickle_metadata_restricted(data: bytes, allowlist: DcpAllowlist, *, source: str) -> Any:
    """`data` through the restricted unpickler; a DCP `Metadata` or CheckpointLoadError."""
    try:
        metadata = RestrictedMetadataUnpickler(io.BytesIO(data), allowlist, source=source).load()
    except UnsafeCheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as err:
        raise CheckpointLoadError(f"{source}: unreadable DCP metadata: {err}") from None
    except MemoryError:  # (the scan refuses the one known way: a memo index past the file)
        raise CheckpointLoadError(f"{source}: unpickling it ran out of memory") from None
    if not isinstance(metadata, Metadata):
        raise CheckpointLoadError(
            f"{source}: is a pickled {type(metadata).__name__}, not DCP Metadata"
        )
    return metadata


def read_metadata_bytes(path: str | os.PathLike[str]) -> bytes:
    """A `.metadata` file's bytes, refusing one larger than the auditor reads."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_PICKLE_BYTES + 1)
    if len(data) > MAX_PICKLE_BYTES:
        raise CheckpointLoadError(f"{path}: larger than {MAX_PICKLE_BYTES} bytes: refusing")
    return data


def read_metadata_restricted(path: str | os.PathLike[str], allowlist: DcpAllowlist) -> Any:
    """Scan `.metadata` statically, then unpickle it restricted. Raises UnsafeCheckpointError
    (naming the global and its path) or CheckpointLoadError; nothing from the file runs."""
    source = os.fspath(path)
    data = read_metadata_bytes(path)
    try:
        findings = scan_metadata(data, allowlist)
    except (TruncatedPickle, MalformedPickle) as err:
        raise CheckpointLoadError(f"{source}: unreadable DCP metadata: {err}") from None
    if findings:
        first = findings[0]
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        raise UnsafeCheckpointError(
            f"{source}: refused: {first.path}: {first.detail}{more}; nothing from it was run"
        )
    return unpickle_metadata_restricted(data, allowlist, source=source)


_DELETE = f"delete it if the folder's {METADATA} is complete; otherwise re-save the checkpoint"


def scan_rank_local(folder: Path, allowlist: DcpAllowlist) -> tuple[list[str], list[Finding]]:
    """The rank-local `__<rank>.metadata` files of a folder (their names) and every reason
    to refuse them: `dcp.load` unpickles one with plain pickle whenever reading `.metadata`
    raises, so each must be as safe as `.metadata` itself."""
    names = sorted(
        entry.name for entry in os.scandir(folder) if RANK_METADATA.fullmatch(entry.name)
    )
    findings: list[Finding] = []
    for file in names:
        try:
            regular_file_size(folder / file)  # a FIFO would block the read: not opened
            findings += scan_metadata(read_metadata_bytes(folder / file), allowlist, file)
        except Unreadable as err:
            detail = f"{err}, and dcp.load reads it when {METADATA} cannot be read"
        except (OSError, CheckpointLoadError, TruncatedPickle, MalformedPickle) as err:
            detail = f"not a readable pickle ({err}): it cannot be vouched for"
        else:
            continue
        findings.append(Finding("dcp-rank-metadata", detail, None, _DELETE, False, 0, file))
    return names, findings
