"""The static verdict on a DCP `.metadata`: the auditor's symbolic run, on the one pickle
machine, against DCP's metadata allowlist.

DCP reads `.metadata` with Python's own unpickler, not torch's weights_only one, so what
matters is not torch.save's opcode subset but which globals the pickle names: every opcode
Python accepts is accepted here, and everything else is the auditor's semantics
(`audit.verdict.PickleInterpreter`): a GLOBAL outside the allowlist, a REDUCE or NEWOBJ of
something that is not an allowed global, a BUILD on anything but an allowed class's instance
is a finding, by path from the root. A persistent id is one too: DCP's reader defines no
`persistent_load`, so such a file cannot load. So is what Python's unpickler does and the
restricted one would not: below protocol 4 it looks a dotted name up as one attribute (and
fails); a PUT sizes its memo to the index (an index past the file is memory, not objects);
and an Enum call returns the class's shared member, which a BUILD would change for the whole
process (the auditing one included).
"""

from __future__ import annotations

from pytest_ckpt.audit.advice import is_dangerous
from pytest_ckpt.audit.formats.dcp import METADATA
from pytest_ckpt.audit.formats.dcp.metadata_allowlist import DcpAllowlist
from pytest_ckpt.audit.formats.dcp.metadata_records import DcpRecords
from pytest_ckpt.audit.global_kinds import display
from pytest_ckpt.audit.nodes import Finding, Node
from pytest_ckpt.audit.opcodes import MalformedPickle, Op, TruncatedPickle
from pytest_ckpt.audit.verdict import PickleInterpreter, gc_paused


class _Flagged(Exception):
    """The run with records found something: the run without them decides."""


class DcpMetadataInterpreter(PickleInterpreter):
    """The auditor's symbolic run with Python's opcode set and no torch tensor records;
    `records` lets DCP's own records (`metadata_records`) skip the opcode loop."""

    ACCEPTED = None

    def __init__(self, data: bytes, allowlist: DcpAllowlist, *, records: bool = False) -> None:
        super().__init__(data, allowlist.static, fast_records=False)
        self.dcp_allowlist = allowlist
        self.protocol = 0  # as Python's unpickler starts
        self.records = DcpRecords() if records else None
        if self.records is not None:
            self.take_records = self.records.take

    def new_replay(self, data: bytes) -> PickleInterpreter:
        replay = DcpMetadataInterpreter(data, self.dcp_allowlist)
        replay.protocol = self.protocol
        return replay

    def _op_PROTO(self, op: Op) -> None:
        self.protocol = op.arg  # Python's unpickler: the last PROTO read sets it

    def _op_GLOBAL(self, op: Op) -> None:
        module, name = op.arg
        if self.protocol < 4 and "." in name:
            self._flag(
                None,
                Finding(
                    "dcp-malformed",
                    f"global {display(module)} {display(name)} at offset {op.offset}: below "
                    "pickle protocol 4 Python's unpickler looks the name up as one attribute, "
                    "finds none, and dcp.load cannot read the metadata",
                    None,
                    "re-save the checkpoint with torch.distributed.checkpoint.save",
                    False,
                    op.offset,
                ),
            )
        super()._op_GLOBAL(op)

    def _op_BUILD(self, op: Op) -> None:
        inst = self.stack[-2] if len(self.stack) >= 2 else None
        if isinstance(inst, Node) and inst.type_name in self.dcp_allowlist.enums:
            detail = (
                f"BUILD on an Enum member ({display(inst.type_name)}) at offset {op.offset}: "
                "the call returned the class's shared member, and its state would change for "
                "everything in the loading process"
            )
            self._flag(inst, Finding("unsupported-operation", detail, None, "", False, op.offset))
        super()._op_BUILD(op)

    def memo_past_end(self, index: int) -> None:
        """A PUT past the memo's end: Python's unpickler makes room for every index up to
        it (16 bytes each), so one past anything the file could fill is a finding."""
        if index > len(self.data):
            self._flag(
                None,
                Finding(
                    "resource-limit",
                    f"memo index {index} in a pickle of {len(self.data)} bytes: Python's "
                    f"unpickler would allocate {16 * index:,} bytes for its memo",
                    None,
                    "",
                    False,
                    0,  # (a PUT's offset is not passed down to the memo)
                ),
            )

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


def _dcp_fix(finding: Finding, file: str = METADATA) -> Finding:
    """torch.save advice does not apply here: add_safe_globals does not reach DCP's reader.
    `file`: the metadata file's name (`.metadata`, or a rank-local `__0.metadata`)."""
    name = finding.global_name
    if name is None:
        fix = "re-save the checkpoint with torch.distributed.checkpoint.save"
    elif is_dangerous(name):
        fix = (
            f"do not load this folder: unpickling its {file} calls {name} (dcp.load with "
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
        f"{finding.detail} in {file}",
        name,
        fix,
        False,
        finding.offset,
        f"{file}:{finding.path}",
    )


def scan_metadata(data: bytes, allowlist: DcpAllowlist, name: str = METADATA) -> list[Finding]:
    """Every reason the restricted reader would refuse this `.metadata`, by path; [] when
    it may be unpickled (`name`: the file's, in paths). Raises TruncatedPickle or
    MalformedPickle for a broken pickle.

    A clean `.metadata` (the common case, and the costly one: some 65 opcodes a tensor) is
    answered by one run of the machine with DCP's records taken whole (`metadata_records`);
    anything else (a finding, an error) gets the machine's run without them, whose findings
    by path and errors are the answer."""
    if runs_clean(data, allowlist):
        return []
    return scan_metadata_general(data, allowlist, name)


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


def scan_metadata_general(
    data: bytes, allowlist: DcpAllowlist, name: str = METADATA
) -> list[Finding]:
    """`scan_metadata` on the machine alone (what the proof is tested against)."""
    _root, findings = DcpMetadataInterpreter(data, allowlist).run()
    return [_dcp_fix(finding, name) for finding in findings]
