"""`CheckpointManager`: atomic checkpoint files with verified sidecars, loaded weights_only.

`save` writes to a temporary file in the same directory, flushes and fsyncs it, renames it
into place with `os.replace` (atomic on POSIX), then writes a JSON sidecar the same way and
fsyncs the directory. A checkpoint counts only once its sidecar is in place and its sha256
matches, so a crash at any point leaves either nothing or a complete, verifiable file;
`list()` and `latest()` never offer a partial one. Every failure raises a `CheckpointError`
carrying the path and the reason: nothing is swallowed and nothing returns `None` in its
place (how a broken loader once hid through a whole audit phase of a well-known RL project).
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_ckpt.durable import file_sha256, fsync_directory, write_atomically
from pytest_ckpt.errors import CheckpointError, CheckpointIntegrityError, CheckpointLoadError

__all__ = [
    "CheckpointInfo",
    "CheckpointIntegrityError",
    "CheckpointManager",
    "file_sha256",
    "write_atomically",
]

SIDECAR_SCHEMA_VERSION = 1
_CHUNK = 1 << 20


@dataclass(slots=True, frozen=True)
class CheckpointInfo:
    step: int
    path: Path
    sha256: str
    bytes: int
    torch_version: str
    created: str


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class CheckpointManager:
    """Numbered checkpoints `<prefix>-<step>.pt` with `<prefix>-<step>.json` sidecars."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep_last: int | None = None,
        prefix: str = "ckpt",
        clock: Callable[[], str] = _utc_now,
    ) -> None:
        if keep_last is not None and (isinstance(keep_last, bool) or keep_last < 1):
            raise ValueError(f"keep_last must be None or an int >= 1, got {keep_last!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", prefix):
            raise ValueError(f"prefix {prefix!r} must be letters, digits, '_', '.' or '-'")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.prefix = prefix
        self.clock = clock
        self._pattern = re.compile(rf"{re.escape(prefix)}-(\d+)\.pt")

    def path_for(self, step: int) -> Path:
        return self.directory / f"{self.prefix}-{step:08d}.pt"

    def save(self, state: Any, step: int) -> CheckpointInfo:
        """Atomically write `state` as checkpoint `step`; returns what was written."""
        import torch

        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.path_for(step)
        write_atomically(self.directory, final, lambda handle: torch.save(state, handle))
        info = CheckpointInfo(
            step=step,
            path=final,
            sha256=file_sha256(final),
            bytes=final.stat().st_size,
            torch_version=torch.__version__,
            created=self.clock(),
        )
        sidecar = {
            "schema_version": SIDECAR_SCHEMA_VERSION,
            "step": info.step,
            "file": final.name,
            "sha256": info.sha256,
            "bytes": info.bytes,
            "torch_version": info.torch_version,
            "created": info.created,
        }
        text = json.dumps(sidecar, indent=2).encode()
        write_atomically(self.directory, final.with_suffix(".json"), lambda h: h.write(text))
        fsync_directory(self.directory)
        if self.keep_last is not None:
            for old in self.list()[: -self.keep_last]:
                old.path.with_suffix(".json").unlink(missing_ok=True)
                old.path.unlink(missing_ok=True)
        return info

    def _read_sidecar(self, path: Path) -> CheckpointInfo:
        sidecar = path.with_suffix(".json")
        try:
            data = json.loads(sidecar.read_text())
        except FileNotFoundError:
            raise CheckpointIntegrityError(f"{path}: no sidecar {sidecar.name}") from None
        except (OSError, ValueError) as err:
            raise CheckpointIntegrityError(f"{sidecar}: unreadable sidecar: {err}") from None
        expected = {"schema_version", "step", "file", "sha256", "bytes", "torch_version", "created"}
        if not isinstance(data, dict) or set(data) != expected:
            raise CheckpointIntegrityError(f"{sidecar}: sidecar fields are not {sorted(expected)}")
        if data["schema_version"] != SIDECAR_SCHEMA_VERSION or data["file"] != path.name:
            raise CheckpointIntegrityError(f"{sidecar}: sidecar does not describe {path.name}")
        return CheckpointInfo(
            data["step"],
            path,
            data["sha256"],
            data["bytes"],
            data["torch_version"],
            data["created"],
        )

    def list(self) -> list[CheckpointInfo]:
        """Checkpoints with a sidecar, oldest first. Files without one (a save that did not
        finish) are not checkpoints yet and are left out."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            if self._pattern.fullmatch(path.name) and path.with_suffix(".json").exists():
                try:
                    found.append(self._read_sidecar(path))
                except CheckpointIntegrityError:
                    continue  # a sidecar being replaced right now; verify() reports it
        return sorted(found, key=lambda info: info.step)

    def latest(self) -> CheckpointInfo | None:
        """The newest checkpoint whose bytes match its sidecar; None only when there is none."""
        for info in reversed(self.list()):
            if file_sha256(info.path) == info.sha256:
                return info
        return None

    def verify(self, step: int) -> CheckpointInfo:
        path = self.path_for(step)
        if not path.exists():
            raise CheckpointIntegrityError(f"{path}: no such checkpoint")
        info = self._read_sidecar(path)
        actual = file_sha256(path)
        if actual != info.sha256:
            raise CheckpointIntegrityError(
                f"{path}: sha256 {actual[:12]}... does not match its sidecar {info.sha256[:12]}..."
            )
        return info

    def load(self, step: int | None = None) -> Any:
        """Verify, then `torch.load(weights_only=True)` checkpoint `step` (default: latest)."""
        import pickle

        import torch

        if step is None:
            info = self.latest()
            if info is None:
                raise CheckpointError(f"{self.directory}: no complete checkpoint to load")
        else:
            info = self.verify(step)
        try:
            return torch.load(info.path, weights_only=True, map_location="cpu")
        except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
            from pytest_ckpt.checks.loading import torch_reason

            raise CheckpointLoadError(f"{info.path}: {torch_reason(err)}") from err

    # ---- DCP folders: pytest_ckpt.distributed.folders does the work ----------------------

    def _dcp_folders(self) -> Any:
        from pytest_ckpt.distributed.folders import DcpFolders

        return DcpFolders(self.directory, prefix=self.prefix, clock=self.clock)

    def dcp_path_for(self, step: int) -> Path:
        return self._dcp_folders().path_for(step)

    def save_dcp(self, state: dict[str, Any], step: int, *, process_group: Any = None) -> Path:
        """Every rank saves its part of `state` as DCP folder `step`: into a temporary folder,
        `.metadata` last, renamed into place, then a sidecar with each file's sha256 (see
        pytest_ckpt.distributed.folders). Returns the folder; honours keep_last."""
        folders = self._dcp_folders()
        path = folders.save(state, step, process_group=process_group)
        if self.keep_last is not None:
            from pytest_ckpt.distributed.folders import rank_in

            if rank_in(process_group) == 0:
                folders.prune(self.keep_last)
        return path

    def list_dcp(self) -> list[Any]:
        """DCP folders with a sidecar, oldest first (`DcpCheckpointInfo`s)."""
        return self._dcp_folders().list()

    def latest_dcp(self) -> Any:
        """The newest DCP folder whose files match its sidecar; None when there is none."""
        return self._dcp_folders().latest()

    def verify_dcp(self, step: int) -> Any:
        return self._dcp_folders().verify(step)

    def load_dcp(
        self, state: dict[str, Any], step: int | None = None, *, process_group: Any = None
    ) -> Any:
        """Verify DCP folder `step` (default: the latest), then load it into `state` in place
        through SafeFileSystemReader; returns its `DcpCheckpointInfo`."""
        return self._dcp_folders().load(state, step, process_group=process_group)
