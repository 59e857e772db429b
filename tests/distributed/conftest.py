"""One genuine DCP folder per session, from a real 2-rank FSDP2 save (forked ranks, gloo on
127.0.0.1), and helpers that damage copies of it the ways the audit must catch."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch


def small_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def _save_fsdp2(context: Any, folder: str) -> dict[str, Any]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_state_dict,
    )
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = small_model()
    fully_shard(model, mesh=DeviceMesh.from_group(context.group, "cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(8, 4)).sum().backward()
    optimizer.step()
    model_state, optim_state = get_state_dict(model, optimizer)
    extra = {"step": 7, "note": "hello", "sizes": [1, 2, 3]}
    dcp.save({"model": model_state, "optim": optim_state, "extra": extra}, checkpoint_id=folder)
    full, _ = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
    return full


@pytest.fixture(scope="session")
def fsdp2_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """(folder, the full model state at save time) of a 2-rank FSDP2 model + Adam save."""
    from pytest_ckpt.distributed.launch import run_ranks

    work = tmp_path_factory.mktemp("dcp")
    folder = work / "genuine"
    full = run_ranks(2, _save_fsdp2, str(folder), workdir=work, phase="fixture", timeout=120)
    return folder, full[0]


@pytest.fixture
def dcp_copy(fsdp2_folder, tmp_path) -> Path:
    """A copy of the genuine folder, to damage."""
    target = tmp_path / "copy"
    shutil.copytree(fsdp2_folder[0], target)
    return target


def read_metadata(folder: Path) -> Any:
    """The genuine metadata object (through the restricted unpickler: it is ours)."""
    from pytest_ckpt.audit.formats.dcp.metadata_allowlist import load_dcp_allowlist
    from pytest_ckpt.audit.formats.dcp.metadata_unpickle import read_metadata_restricted

    return read_metadata_restricted(folder / ".metadata", load_dcp_allowlist())


def write_metadata(folder: Path, metadata: Any) -> None:
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))


def replace_byte_item(folder: Path, fqn: str, value: Any) -> int:
    """Append `value`, torch.saved, to a shard file and point byte item `fqn` at it: the
    folder a hostile party would hand you. Returns the item's offset."""
    import io

    from torch.distributed.checkpoint.metadata import MetadataIndex

    metadata = read_metadata(folder)
    shard = folder / "__0_0.distcp"
    buffer = io.BytesIO()
    torch.save(value, buffer)
    start = shard.stat().st_size
    with open(shard, "ab") as handle:
        handle.write(buffer.getvalue())
    info = metadata.storage_data[MetadataIndex(fqn)]
    info.relative_path, info.offset, info.length = shard.name, start, len(buffer.getvalue())
    write_metadata(folder, metadata)
    return start


class RunsCommand:
    """Unpickles to os.system(command): what a hostile .metadata or byte item does."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


def model_template() -> dict[str, Any]:
    """A state dict for loading the genuine folder in one process (tensors at full size)."""
    model = small_model()
    return {
        "model": {k: torch.zeros_like(v) for k, v in model.state_dict().items()},
        "extra": {"step": 0, "note": "", "sizes": []},
    }
