"""`SafeFileSystemReader`: `dcp.load` without running code from the folder.

torch's `FileSystemReader.read_metadata` reads `.metadata` with a plain `pickle.load`, and
DCP's default planner reads every byte item with `torch.load(weights_only=False)`: loading a
folder from elsewhere runs whatever it contains. This reader, a drop-in `storage_reader`:

- reads `.metadata` only after the static machine found nothing outside DCP's metadata
  allowlist (`metadata_scan`), and then through `RestrictedMetadataUnpickler`, whose
  `find_class` hands out only the allowlist's own objects (it imports nothing) and which has
  no `persistent_load`: the dataclasses DCP needs, and nothing else;
- passes a byte item to the planner only once the weights_only auditor found nothing in it;
- leaves tensor items to `FileSystemReader`, which loads them with `weights_only=True`.

Anything refused raises `UnsafeCheckpointError` naming the file and the global; nothing from
the folder has run by then.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from typing import Any

from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from pytest_ckpt.audit import audit_file
from pytest_ckpt.audit.allowlist import Allowlist, load_allowlist
from pytest_ckpt.audit.formats.dcp.metadata_allowlist import load_dcp_allowlist
from pytest_ckpt.audit.formats.dcp.metadata_unpickle import read_metadata_restricted
from pytest_ckpt.errors import CheckpointLoadError, UnsafeCheckpointError

__all__ = ["SafeFileSystemReader", "load_safely"]


class _AuditedByteItems:
    """The load planner, with each byte item audited before the planner unpickles it."""

    def __init__(self, planner: Any, reader: SafeFileSystemReader) -> None:
        self._planner, self._reader = planner, reader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._planner, name)

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        value.name = f"{os.fspath(self._reader.path)}:{read_item.storage_index.fqn}"
        report = audit_file(value, allowlist=self._reader.byte_item_allowlist)
        if report.error is not None:
            raise self._reader.refuse(
                CheckpointLoadError(f"{value.name}: unreadable byte item: {report.error}")
            )
        if report.findings:
            first = report.findings[0]
            raise self._reader.refuse(
                UnsafeCheckpointError(
                    f"{value.name}: refused byte item: {first.path}: {first.detail} (DCP's "
                    "planner would unpickle it without weights_only); nothing from it was run"
                )
            )
        value.seek(0)
        self._planner.load_bytes(read_item, value)


class SafeFileSystemReader(FileSystemReader):
    """`FileSystemReader` that refuses, instead of running, anything outside the allowlists.

        dcp.load(state_dict, storage_reader=SafeFileSystemReader(path))

    `allow`: extra dotted names admitted in both the metadata and the byte items (your own
    planner's classes); `allowlist`: the weights_only allowlist for byte items (default:
    torch's, plus `allow`).

    `dcp.load` wraps whatever a reader raises in its `CheckpointException` (a BaseException
    holding each rank's error); the reader keeps its own refusal in `refusal`, and
    `load_safely` raises it as the CheckpointError it is.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        allow: Iterable[str] = (),
        allowlist: Allowlist | None = None,
        _extension_registry: Any = None,
    ) -> None:
        super().__init__(path, _extension_registry)
        allow = tuple(allow)
        self.metadata_allowlist = load_dcp_allowlist(allow)
        self.byte_item_allowlist = allowlist or load_allowlist(allow)
        self.refusal: CheckpointLoadError | None = None

    def refuse(self, error: CheckpointLoadError) -> CheckpointLoadError:
        """Remember why this reader refused (the first reason), and return it to raise."""
        self.refusal = self.refusal or error
        return error

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        try:
            metadata = read_metadata_restricted(
                self._get_metadata_path(kwargs.get("rank")), self.metadata_allowlist
            )
        except CheckpointLoadError as error:
            raise self.refuse(error) from None
        if getattr(metadata, "storage_meta", None) is None:  # as FileSystemReader does
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata

    def read_data(self, plan: Any, planner: Any) -> Any:
        # Duck-typed, not a LoadPlanner subclass: a subclass would inherit LoadPlanner's own
        # methods where the wrapped planner's must answer (only load_bytes is ours).
        audited = _AuditedByteItems(planner, self)
        return super().read_data(plan, audited)  # type: ignore[arg-type]


def load_safely(
    state_dict: dict[str, Any],
    checkpoint_id: str | os.PathLike[str],
    *,
    process_group: Any = None,
    planner: Any = None,
    allow: Iterable[str] = (),
) -> None:
    """`dcp.load` of `checkpoint_id` into `state_dict` through `SafeFileSystemReader`; a
    refusal is raised as the CheckpointError it is, not inside DCP's CheckpointException."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    reader = SafeFileSystemReader(checkpoint_id, allow=allow)
    try:
        dcp.load(state_dict, storage_reader=reader, planner=planner, process_group=process_group)
    except CheckpointException as wrapped:
        if reader.refusal is not None:
            raise reader.refusal from None
        for rank, (error, _trace) in sorted(wrapped.failures.items()):
            if isinstance(error, CheckpointLoadError):  # another rank's reader refused
                raise type(error)(f"rank {rank}: {error}") from None
        raise
