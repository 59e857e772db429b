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

import builtins
import datetime
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_ckpt.async_saves import PendingSave, SaveQueue, snapshot_to_cpu, start_dcp_save
from pytest_ckpt.durable import file_sha256, fsync_directory, write_atomically
from pytest_ckpt.errors import CheckpointError, CheckpointIntegrityError, CheckpointLoadError

if TYPE_CHECKING:  # imported when a DCP method runs: plain checkpoints never import them
    from torch.distributed import ProcessGroup

    from pytest_ckpt.distributed.folders import DcpCheckpointInfo, DcpFolders

__all__ = [
    "CheckpointInfo",
    "CheckpointIntegrityError",
    "CheckpointManager",
    "PendingSave",
    "file_sha256",
    "write_atomically",
]

SIDECAR_SCHEMA_VERSION = 1


@dataclass(slots=True, frozen=True)
class CheckpointInfo:
    step: int
    path: Path
    sha256: str
    bytes: int
    torch_version: str
    created: str


_FIELDS = frozenset(
    {"schema_version", "step", "file", "sha256", "bytes", "torch_version", "created"}
)


def _sidecar_fields(info: CheckpointInfo) -> dict[str, Any]:
    return {
        "schema_version": SIDECAR_SCHEMA_VERSION,
        "step": info.step,
        "file": info.path.name,
        "sha256": info.sha256,
        "bytes": info.bytes,
        "torch_version": info.torch_version,
        "created": info.created,
    }


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _world_size(process_group: ProcessGroup | None) -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(process_group)
    return 1


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
        self._saves = SaveQueue()

    def path_for(self, step: int) -> Path:
        return self.directory / f"{self.prefix}-{step:08d}.pt"

    def _pending_for(self, path: Path) -> Path:
        """The sidecar of a re-save of `path`, written before the new bytes replace the old."""
        return path.with_name(f".pending-{path.stem}.json")

    def save(
        self, state: Any, step: int, *, blocking: bool = True
    ) -> CheckpointInfo | PendingSave[CheckpointInfo]:
        """Atomically write `state` as checkpoint `step`; returns what was written.

        With `blocking=False`, `state` is copied to CPU first and a `PendingSave` is returned
        at once; its `wait()` returns the `CheckpointInfo` (pytest_ckpt.async_saves). Saves
        of one manager are written one at a time in call order, blocking ones included.

        Re-saving an existing step is crash-safe too: the new sidecar is first written beside
        the old one (`.pending-<name>.json`), then the new bytes replace the old, then the
        pending sidecar replaces the old one; at every moment the file matches one of them.
        `keep_last` never removes the checkpoint just saved.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        what = f"checkpoint {step}"
        if blocking:
            return self._saves.run(lambda: self._save_now(state, step), what)
        snapshot = snapshot_to_cpu(state)
        return self._saves.submit(lambda: self._save_now(snapshot, step), what)

    def _save_now(self, state: Any, step: int) -> CheckpointInfo:
        final = self.path_for(step)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if final.is_dir() or final.with_suffix(".json").is_dir():
                raise CheckpointError(f"{final}: a directory is in the way of checkpoint {step}")
            info = self._write(state, step, final)
        except OSError as err:
            raise CheckpointError(f"{final}: cannot save: {err.strerror or err}") from err
        if self.keep_last is not None:
            others = [old for old in self.list() if old.step != step]
            for old in others[: max(len(others) - (self.keep_last - 1), 0)]:
                old.path.with_suffix(".json").unlink(missing_ok=True)
                old.path.unlink(missing_ok=True)
        return info

    def _write(self, state: Any, step: int, final: Path) -> CheckpointInfo:
        """Bytes to a temp file, the pending sidecar, then the two renames (see `save`)."""
        import torch

        handle = tempfile.NamedTemporaryFile(dir=self.directory, prefix=".tmp-", delete=False)  # noqa: SIM115
        temp = Path(handle.name)
        try:
            with handle:
                torch.save(state, handle)
                handle.flush()
                os.fsync(handle.fileno())
            info = CheckpointInfo(
                step=step,
                path=final,
                sha256=file_sha256(temp),
                bytes=temp.stat().st_size,
                torch_version=torch.__version__,
                created=self.clock(),
            )
            text = json.dumps(_sidecar_fields(info), indent=2).encode()
            pending = self._pending_for(final)
            write_atomically(self.directory, pending, lambda h: h.write(text))
            fsync_directory(self.directory)
            os.replace(temp, final)
            fsync_directory(self.directory)
            os.replace(pending, final.with_suffix(".json"))
            fsync_directory(self.directory)
        finally:
            temp.unlink(missing_ok=True)
        return info

    def _read_sidecar(self, path: Path, sidecar: Path | None = None) -> CheckpointInfo:
        """The sidecar of checkpoint file `path`, every field checked: a CheckpointIntegrityError
        naming the sidecar and what is wrong, never a TypeError later."""
        sidecar = path.with_suffix(".json") if sidecar is None else sidecar
        try:
            data = json.loads(sidecar.read_text())
        except FileNotFoundError:
            raise CheckpointIntegrityError(f"{path}: no sidecar {sidecar.name}") from None
        except (OSError, ValueError) as err:
            raise CheckpointIntegrityError(f"{sidecar}: unreadable sidecar: {err}") from None
        if not isinstance(data, dict) or set(data) != _FIELDS:
            raise CheckpointIntegrityError(f"{sidecar}: sidecar fields are not {sorted(_FIELDS)}")
        if data["schema_version"] != SIDECAR_SCHEMA_VERSION or data["file"] != path.name:
            raise CheckpointIntegrityError(f"{sidecar}: sidecar does not describe {path.name}")
        match = self._pattern.fullmatch(path.name)
        step = data["step"]
        if isinstance(step, bool) or not isinstance(step, int) or match is None:
            raise CheckpointIntegrityError(f"{sidecar}: step must be an int, got {step!r}")
        if step != int(match.group(1)):
            raise CheckpointIntegrityError(f"{sidecar}: step {step} is not {path.name}'s")
        size, sha = data["bytes"], data["sha256"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise CheckpointIntegrityError(f"{sidecar}: bytes must be an int >= 0, got {size!r}")
        if not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
            raise CheckpointIntegrityError(f"{sidecar}: sha256 is not 64 hex digits: {sha!r}")
        for name in ("torch_version", "created"):
            if not isinstance(data[name], str):
                raise CheckpointIntegrityError(f"{sidecar}: {name} must be a string")
        return CheckpointInfo(step, path, sha, size, data["torch_version"], data["created"])

    def _checked(self, path: Path) -> CheckpointInfo:
        """Checkpoint file `path` with the sidecar its bytes match: its own, or the pending
        one of a re-save that died between the two renames."""
        if not path.is_file():
            what = "is not a regular file" if path.exists() else "no such checkpoint"
            raise CheckpointIntegrityError(f"{path}: {what}")
        info = self._read_sidecar(path)
        try:
            actual = file_sha256(path)
        except OSError as err:
            raise CheckpointIntegrityError(f"{path}: cannot read: {err}") from None
        if actual == info.sha256:
            return info
        pending = self._pending_for(path)
        if pending.is_file():
            try:
                staged = self._read_sidecar(path, pending)
            except CheckpointIntegrityError:
                staged = None
            if staged is not None and staged.sha256 == actual:
                return staged
        raise CheckpointIntegrityError(
            f"{path}: sha256 {actual[:12]}... does not match its sidecar {info.sha256[:12]}..."
        )

    def list(self) -> list[CheckpointInfo]:
        """Checkpoints with a valid sidecar, oldest first. Files without one (a save that did
        not finish) and sidecars that do not describe their file are left out (verify() and
        load() report them with the reason)."""
        if not self.directory.is_dir():
            return []
        try:
            entries = list(self.directory.iterdir())
        except OSError as err:
            raise CheckpointError(f"{self.directory}: cannot list: {err.strerror or err}") from err
        found = []
        for path in entries:
            if self._pattern.fullmatch(path.name) and path.is_file():
                try:
                    found.append(self._read_sidecar(path))
                except CheckpointIntegrityError:
                    continue
        return sorted(found, key=lambda info: info.step)

    def latest(self) -> CheckpointInfo | None:
        """The newest checkpoint whose bytes match its sidecar; None only when there is none."""
        for info in reversed(self.list()):
            try:
                return self._checked(info.path)
            except CheckpointIntegrityError:
                continue
        return None

    def verify(self, step: int) -> CheckpointInfo:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise CheckpointError(f"{self.directory}: step must be an int >= 0, got {step!r}")
        return self._checked(self.path_for(step))

    def load(self, step: int | CheckpointInfo | None = None) -> Any:
        """Verify, then `torch.load(weights_only=True)` checkpoint `step` (default: latest).
        `step` may be what `latest()` or `list()` returned."""
        import pickle

        import torch

        if isinstance(step, CheckpointInfo):
            if step.path != self.path_for(step.step):
                raise CheckpointError(f"{step.path}: not a checkpoint of {self.directory}")
            step = step.step
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
        except OSError as err:
            raise CheckpointLoadError(f"{info.path}: cannot read: {err}") from err

    # ---- DCP folders: pytest_ckpt.distributed.folders does the work ----------------------

    def _dcp_folders(self) -> DcpFolders:
        from pytest_ckpt.distributed.folders import DcpFolders

        return DcpFolders(self.directory, prefix=self.prefix, clock=self.clock)

    def dcp_path_for(self, step: int) -> Path:
        return self._dcp_folders().path_for(step)

    def save_dcp(
        self,
        state: dict[str, Any],
        step: int,
        *,
        process_group: ProcessGroup | None = None,
        blocking: bool = True,
    ) -> Path | PendingSave[Path]:
        """Every rank saves its part of `state` as DCP folder `step`: into a temporary folder,
        `.metadata` last, renamed into place, then a sidecar with each file's sha256 (see
        pytest_ckpt.distributed.folders). Returns the folder; honours keep_last.

        With `blocking=False` the save goes through `dcp.async_save` (which copies `state` to
        CPU before returning) and a `PendingSave` is returned whose `wait()` gives the folder.
        A DCP save waits for every save of this manager still in flight before it starts."""
        from pytest_ckpt.distributed.folders import rank_in

        folders = self._dcp_folders()
        rank = rank_in(process_group)

        def prune(path: Path) -> Path:
            if self.keep_last is not None and rank == 0:
                folders.prune(self.keep_last, just_saved=step)
            return path

        if blocking:
            return self._saves.run(
                lambda: prune(folders.save(state, step, process_group=process_group)),
                f"DCP checkpoint {step}",
            )
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        self._saves.drain()  # one DCP save in flight at a time: never two on one temp folder
        finish = start_dcp_save(folders, state, step, process_group, _world_size(process_group))
        return self._saves.submit(lambda: prune(finish()), f"DCP checkpoint {step}")

    def list_dcp(self) -> builtins.list[DcpCheckpointInfo]:
        """DCP folders with a sidecar, oldest first (`DcpCheckpointInfo`s)."""
        return self._dcp_folders().list()

    def latest_dcp(self) -> DcpCheckpointInfo | None:
        """The newest DCP folder whose files match its sidecar; None when there is none."""
        return self._dcp_folders().latest()

    def verify_dcp(self, step: int) -> DcpCheckpointInfo:
        return self._dcp_folders().verify(step)

    def load_dcp(
        self,
        state: dict[str, Any],
        step: int | None = None,
        *,
        process_group: ProcessGroup | None = None,
    ) -> DcpCheckpointInfo:
        """Verify DCP folder `step` (default: the latest), then load it into `state` in place
        through SafeFileSystemReader; returns its `DcpCheckpointInfo`."""
        return self._dcp_folders().load(state, step, process_group=process_group)
