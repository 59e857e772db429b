"""The DCP formats as the formats table (`audit.formats.table`) sees them: a DCP folder
(one holding `.metadata`: audited whole by `dcp.folder`), and a file named like a DCP
member (`.metadata`, `__0.metadata`, `__0_0.distcp`: the answer is to audit its folder).
A member is recognised by its name alone, so no other file reaches the DCP audit; the DCP
audit itself is imported when a folder or a member's name is met.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_ckpt.audit.formats import Format, Probe
from pytest_ckpt.audit.formats.dcp import is_member_name
from pytest_ckpt.audit.formats.torch_archive import audit_torch_file

if TYPE_CHECKING:
    from pytest_ckpt.audit import Report
    from pytest_ckpt.audit.allowlist import Allowlist


def _is_dcp_folder(probe: Probe) -> bool:
    if not probe.folder:
        return False
    from pytest_ckpt.audit.formats.dcp.folder import is_dcp_folder

    return is_dcp_folder(probe.path)


def _audit_folder(
    path: str, allowlist: Allowlist, *, allow: tuple[str, ...], map_location: str | None
) -> Report:
    """`audit_dcp_folder`: a DCP load takes no map_location for its `.metadata`."""
    from pytest_ckpt.audit.formats.dcp.folder import audit_dcp_folder

    return audit_dcp_folder(path, allowlist=allowlist, allow=allow)


def _is_member(probe: Probe) -> bool:
    return not probe.folder and is_member_name(probe.name)


def _audit_member(
    path: str, allowlist: Allowlist, *, allow: tuple[str, ...], map_location: str | None
) -> Report:
    """Unreadable, pointing at its folder; a file gone since it was probed is the torch
    file's audit's to report ("no such file")."""
    from pytest_ckpt.audit.formats.dcp.folder import audit_dcp_target

    report = audit_dcp_target(path, allowlist=allowlist, allow=allow)
    if report is None:
        return audit_torch_file(path, allowlist, allow=allow, map_location=map_location)
    return report


DCP_FOLDER = Format("DCP folder", _is_dcp_folder, _audit_folder, folder=True)
DCP_MEMBER = Format("DCP member", _is_member, _audit_member)
