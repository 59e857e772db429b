"""The static verdict on a DCP `.metadata`: the auditor's symbolic run, on the one pickle
machine, against DCP's metadata allowlist.

DCP reads `.metadata` with Python's own unpickler, not torch's weights_only one, so what
matters is not torch.save's opcode subset but which globals the pickle names: every opcode
Python accepts is accepted here, and everything else is the auditor's semantics
(`audit.verdict.PickleInterpreter`): a GLOBAL outside the allowlist, a REDUCE or NEWOBJ of
something that is not an allowed global, a BUILD on anything but an allowed class's instance
is a finding, by path from the root. A persistent id is one too: DCP's reader defines no
`persistent_load`, so such a file cannot load.
"""

from __future__ import annotations

from pytest_ckpt.audit.advice import is_dangerous
from pytest_ckpt.audit.formats.dcp.metadata_allowlist import DcpAllowlist
from pytest_ckpt.audit.formats.dcp.metadata_proof import proves_clean
from pytest_ckpt.audit.nodes import Finding, Node
from pytest_ckpt.audit.opcodes import Op
from pytest_ckpt.audit.verdict import PickleInterpreter

METADATA = ".metadata"


class DcpMetadataInterpreter(PickleInterpreter):
    """The auditor's symbolic run with Python's opcode set and no torch tensor records."""

    ACCEPTED = None

    def __init__(self, data: bytes, allowlist: DcpAllowlist) -> None:
        super().__init__(data, allowlist.static, fast_records=False)

    def _op_BINPERSID(self, op: Op) -> None:
        self._pop(op)
        result = Node("<persistent>")
        self._flag(
            result,
            Finding(
                "bad-persistent-id",
                f"persistent id at offset {op.offset}: DCP's metadata reader cannot load it",
                None,
                "re-save the checkpoint with torch.distributed.checkpoint.save",
                False,
                op.offset,
            ),
        )
        self._push(result)


def _dcp_fix(finding: Finding) -> Finding:
    """torch.save advice does not apply here: add_safe_globals does not reach DCP's reader."""
    name = finding.global_name
    if name is None:
        fix = "re-save the checkpoint with torch.distributed.checkpoint.save"
    elif is_dangerous(name):
        fix = (
            f"do not load this folder: unpickling its .metadata calls {name} (dcp.load with "
            "FileSystemReader would run it; SafeFileSystemReader refuses it)"
        )
    else:
        fix = (
            f"a DCP save writes only DCP's metadata classes; if your own planner or storage "
            f"writer stores {name}, allow it by name (--allow {name}), otherwise do not load "
            "this folder"
        )
    return Finding(
        finding.kind,
        f"{finding.detail} in {METADATA}",
        name,
        fix,
        False,
        finding.offset,
        f"{METADATA}:{finding.path}",
    )


def scan_metadata(data: bytes, allowlist: DcpAllowlist) -> list[Finding]:
    """Every reason the restricted reader would refuse this `.metadata`, by path; [] when
    it may be unpickled. Raises TruncatedPickle or MalformedPickle for a broken pickle.

    A clean `.metadata` (the common case, and the costly one: some 65 opcodes a tensor) is
    answered by `metadata_proof` without the machine; anything it cannot prove clean gets
    the machine's full run, whose findings and errors are the answer."""
    if proves_clean(data, allowlist.static):
        return []
    return scan_metadata_general(data, allowlist)


def scan_metadata_general(data: bytes, allowlist: DcpAllowlist) -> list[Finding]:
    """`scan_metadata` on the machine alone (what the proof is tested against)."""
    _root, findings = DcpMetadataInterpreter(data, allowlist).run()
    return [_dcp_fix(finding) for finding in findings]
