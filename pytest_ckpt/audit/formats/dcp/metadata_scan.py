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
from pytest_ckpt.audit.formats.dcp.metadata_records import DcpRecords
from pytest_ckpt.audit.nodes import Finding, Node
from pytest_ckpt.audit.opcodes import MalformedPickle, Op, TruncatedPickle
from pytest_ckpt.audit.verdict import PickleInterpreter, gc_paused

METADATA = ".metadata"


class _Flagged(Exception):
    """The run with records found something: the run without them decides."""


class DcpMetadataInterpreter(PickleInterpreter):
    """The auditor's symbolic run with Python's opcode set and no torch tensor records;
    `records` lets DCP's own records (`metadata_records`) skip the opcode loop."""

    ACCEPTED = None

    def __init__(self, data: bytes, allowlist: DcpAllowlist, *, records: bool = False) -> None:
        super().__init__(data, allowlist.static, fast_records=False)
        self.dcp_allowlist = allowlist
        self.records = DcpRecords() if records else None
        if self.records is not None:
            self.take_records = self.records.take

    def new_replay(self, data: bytes) -> PickleInterpreter:
        return DcpMetadataInterpreter(data, self.dcp_allowlist)

    def _flag(self, node: Node | None, finding: Finding) -> None:
        """With records on, the first finding ends the run: the run without them reports
        every finding by path (`scan_metadata`), so nothing after it is worth running."""
        super()._flag(node, finding)
        if self.records is not None:
            raise _Flagged

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
    answered by one run of the machine with DCP's records taken whole (`metadata_records`);
    anything else (a finding, an error) gets the machine's run without them, whose findings
    by path and errors are the answer."""
    if runs_clean(data, allowlist):
        return []
    return scan_metadata_general(data, allowlist)


def runs_clean(data: bytes, allowlist: DcpAllowlist) -> bool:
    """Whether the machine, taking DCP's records whole, runs `data` to STOP with nothing
    flagged (False on any finding or error: the run without records then decides)."""
    fast = DcpMetadataInterpreter(data, allowlist, records=True)
    try:
        with gc_paused():
            fast.execute()
    except (TruncatedPickle, MalformedPickle, _Flagged):
        return False
    return fast.flags == 0 and not fast.loose


def scan_metadata_general(data: bytes, allowlist: DcpAllowlist) -> list[Finding]:
    """`scan_metadata` on the machine alone (what the proof is tested against)."""
    _root, findings = DcpMetadataInterpreter(data, allowlist).run()
    return [_dcp_fix(finding) for finding in findings]
