"""DCP (`torch.distributed.checkpoint`) folders, safely: the public names of
`pytest_ckpt.distributed` in one import.

    from pytest_ckpt.dcp import SafeFileSystemReader, audit_dcp_folder

    report = audit_dcp_folder("ckpt/step-100")          # as `pytest-ckpt audit DIR`
    dcp.load(state_dict, storage_reader=SafeFileSystemReader("ckpt/step-100"))
"""

from __future__ import annotations

from pytest_ckpt.audit.formats.dcp.folder import audit_dcp_folder, is_dcp_folder
from pytest_ckpt.distributed.safe_reader import SafeFileSystemReader, load_safely
from pytest_ckpt.distributed.world_size import WorldSizeResume, check_world_size_resume

__all__ = [
    "SafeFileSystemReader",
    "WorldSizeResume",
    "audit_dcp_folder",
    "check_world_size_resume",
    "is_dcp_folder",
    "load_safely",
]
