"""Crash-safe DCP folders for `CheckpointManager`: `<prefix>-<step>.dcp/` + a JSON sidecar.

A save is written into a temporary folder beside the final one (`.tmp-<prefix>-<step>.dcp`)
by every rank through `dcp.save`, which writes the shard files first and `.metadata` last,
once every rank has finished. Rank 0 then records each file's size and sha256, renames the
folder into place, fsyncs the directory, and writes the sidecar atomically: only then is it a
checkpoint. A save killed at any point (any rank, SIGKILL) leaves a temporary folder or a
folder without a sidecar, and `list()` / `latest()` offer neither; `latest()` also checks the
files against the sidecar, so a folder damaged later is passed over too. Loading goes
through `SafeFileSystemReader`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_ckpt.durable import file_sha256, fsync_directory, write_atomically
from pytest_ckpt.errors import CheckpointError, CheckpointIntegrityError

SIDECAR_SCHEMA_VERSION = 1
_FIELDS = {"schema_version", "step", "folder", "files", "world_size", "torch_version", "created"}


@dataclass(slots=True, frozen=True)
class DcpCheckpointInfo:
    step: int
    path: Path  # the folder
    files: dict[str, tuple[str, int]]  # name -> (sha256, bytes)
    world_size: int
    torch_version: str
    created: str


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank_in(process_group: Any) -> int:
    """This process's rank in `process_group` (None: the default group); 0 without one."""
    import torch.distributed as dist

    return dist.get_rank(process_group) if _initialized() else 0


def _barrier(group: Any) -> None:
    import torch.distributed as dist

    if _initialized():
        dist.barrier(group=group)


class DcpFolders:
    """The DCP half of a `CheckpointManager` (it delegates its `*_dcp` methods here)."""

    def __init__(self, directory: Path, *, prefix: str, clock: Callable[[], str]) -> None:
        self.directory = directory
        self.prefix = prefix
        self.clock = clock
        self._pattern = re.compile(rf"{re.escape(prefix)}-(\d+)\.dcp")

    def path_for(self, step: int) -> Path:
        return self.directory / f"{self.prefix}-{step:08d}.dcp"

    def sidecar_for(self, folder: Path) -> Path:
        return folder.with_name(folder.name + ".json")

    def save(self, state: dict[str, Any], step: int, *, process_group: Any = None) -> Path:
        """Every rank of `process_group` (or the one process, with none initialised) calls
        this with its part of `state`; returns the folder once it is a checkpoint."""
        import torch
        import torch.distributed.checkpoint as dcp

        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        rank, group = rank_in(process_group), process_group
        final, temporary = self.begin(step, rank)
        _barrier(group)
        dcp.save(state, checkpoint_id=temporary, process_group=group)
        if rank == 0:
            world_size = torch.distributed.get_world_size(group) if _initialized() else 1
            self.finish(temporary, final, step, world_size, saved_by="dcp.save returned")
        _barrier(group)
        return final

    def begin(self, step: int, rank: int) -> tuple[Path, Path]:
        """The folder of `step` and the temporary one its save writes into, made empty by
        rank 0 (what a killed save left behind goes). Shared by `save` and async saves."""
        final = self.path_for(step)
        temporary = final.with_name(f".tmp-{final.name}")
        if rank == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir()
        return final, temporary

    def finish(
        self, temporary: Path, final: Path, step: int, world_size: int, *, saved_by: str
    ) -> None:
        """Rank 0, once every shard is written: `temporary` becomes `final` and its sidecar
        (digests of every file) is written last, durably; only then is it offered. Raises
        CheckpointError when the save left no `.metadata` (`saved_by` says which save)."""
        import torch

        if not (temporary / ".metadata").is_file():
            raise CheckpointError(f"{temporary}: {saved_by} without a .metadata")
        files = {
            p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size}
            for p in sorted(temporary.iterdir())
        }
        sidecar = self.sidecar_for(final)
        sidecar.unlink(missing_ok=True)  # a re-save of this step: unoffered from here on
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        fsync_directory(self.directory)
        record = {
            "schema_version": SIDECAR_SCHEMA_VERSION,
            "step": step,
            "folder": final.name,
            "files": files,
            "world_size": world_size,
            "torch_version": torch.__version__,
            "created": self.clock(),
        }
        text = json.dumps(record, indent=2).encode()
        write_atomically(self.directory, sidecar, lambda handle: handle.write(text))
        fsync_directory(self.directory)

    def read_sidecar(self, folder: Path) -> DcpCheckpointInfo:
        sidecar = self.sidecar_for(folder)
        try:
            data = json.loads(sidecar.read_text())
        except FileNotFoundError:
            raise CheckpointIntegrityError(f"{folder}: no sidecar {sidecar.name}") from None
        except (OSError, ValueError) as err:
            raise CheckpointIntegrityError(f"{sidecar}: unreadable sidecar: {err}") from None
        if not isinstance(data, dict) or set(data) != _FIELDS:
            raise CheckpointIntegrityError(f"{sidecar}: sidecar fields are not {sorted(_FIELDS)}")
        step, files = data["step"], data["files"]
        if (
            data["schema_version"] != SIDECAR_SCHEMA_VERSION
            or data["folder"] != folder.name
            or isinstance(step, bool)
            or not isinstance(step, int)
            or not isinstance(files, dict)
            or ".metadata" not in files
            or not all(
                isinstance(entry, dict)
                and isinstance(entry.get("sha256"), str)
                and type(entry.get("bytes")) is int
                for entry in files.values()
            )
        ):
            raise CheckpointIntegrityError(f"{sidecar}: sidecar does not describe {folder.name}")
        return DcpCheckpointInfo(
            step,
            folder,
            {name: (entry["sha256"], entry["bytes"]) for name, entry in files.items()},
            data["world_size"],
            data["torch_version"],
            data["created"],
        )

    def list(self) -> list[DcpCheckpointInfo]:
        """Folders with a readable sidecar, oldest first (no check of the bytes)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            if self._pattern.fullmatch(path.name) and path.is_dir():
                try:
                    found.append(self.read_sidecar(path))
                except CheckpointIntegrityError:
                    continue  # no sidecar yet: a save that did not finish
        return sorted(found, key=lambda info: info.step)

    def problem(self, info: DcpCheckpointInfo) -> str | None:
        """Why the folder's files do not match its sidecar, if they do not."""
        present = {p.name for p in info.path.iterdir()}
        if present != set(info.files):
            return f"files {sorted(present ^ set(info.files))} differ from its sidecar"
        for name, (digest, size) in info.files.items():
            path = info.path / name
            if path.stat().st_size != size or file_sha256(path) != digest:
                return f"{name}: bytes do not match its sidecar"
        return None

    def latest(self) -> DcpCheckpointInfo | None:
        """The newest folder whose files match its sidecar; None when there is none."""
        for info in reversed(self.list()):
            if self.problem(info) is None:
                return info
        return None

    def verify(self, step: int) -> DcpCheckpointInfo:
        folder = self.path_for(step)
        if not folder.is_dir():
            raise CheckpointIntegrityError(f"{folder}: no such checkpoint")
        info = self.read_sidecar(folder)
        problem = self.problem(info)
        if problem is not None:
            raise CheckpointIntegrityError(f"{folder}: {problem}")
        return info

    def load(
        self, state: dict[str, Any], step: int | None = None, *, process_group: Any = None
    ) -> DcpCheckpointInfo:
        """Verify, then `dcp.load` into `state` in place through `SafeFileSystemReader`."""
        from pytest_ckpt.distributed.safe_reader import load_safely

        if step is None:
            info = self.latest()
            if info is None:
                raise CheckpointError(f"{self.directory}: no complete DCP checkpoint to load")
        else:
            info = self.verify(step)
        load_safely(state, info.path, process_group=process_group)
        return info

    def prune(self, keep_last: int, *, just_saved: int) -> None:
        """Keep step `just_saved` and the newest `keep_last - 1` other folders; remove the
        rest (sidecar first: unoffered at once). As `CheckpointManager.save`'s keep_last: a
        save of an older step (a rerun from an earlier checkpoint) is never the one removed."""
        others = [info for info in self.list() if info.step != just_saved]
        for old in others[: max(len(others) - (keep_last - 1), 0)]:
            self.sidecar_for(old.path).unlink(missing_ok=True)
            shutil.rmtree(old.path, ignore_errors=True)
