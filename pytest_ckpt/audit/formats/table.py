"""THE answer to "which format is this path": one ordered table of the formats the auditor
reads, consulted by the folder walk and by `pytest-ckpt audit PATH` alike (`walk`).

A path is probed once (`probe_file`, `probe_folder`: its size and first bytes, nothing
unpickled), then the first row of `FORMATS` that recognises it is its format. The order is
the decision: bytes before names (a pickle named `.safetensors` is a pickle, as torch.load
would run it), SB3 zips before torch zips (both are zips), a `.bin` nothing reads as a
checkpoint before the torch file (which takes anything named as a checkpoint).
Above the order, `BY_NAME`: a file named like a DCP member is the DCP member's, once some
row claims it (or it is named on the command line). That rule is by name alone, so a plain
file never passes through the DCP check.
What no row claims is not checkpoint-like: a walk lists it as skipped; a file named on the
command line goes to the torch file's audit, which says what it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from pytest_ckpt.audit.formats import HEAD_BYTES, Format, Probe
from pytest_ckpt.audit.formats.dcp_format import DCP_FOLDER, DCP_MEMBER
from pytest_ckpt.audit.formats.safetensors import FORMAT as SAFETENSORS
from pytest_ckpt.audit.formats.sb3_zip import FORMAT as SB3_ZIP
from pytest_ckpt.audit.formats.side_files import JSON_FORMAT, NOT_A_CHECKPOINT_BIN
from pytest_ckpt.audit.formats.torch_archive import FORMAT as TORCH_FILE
from pytest_ckpt.audit.formats.torch_archive import regular_file_size

FORMATS: tuple[Format, ...] = (
    DCP_FOLDER,  # folders: a DCP folder is audited whole; any other folder is walked
    JSON_FORMAT,  # by name: nothing in it runs, so its bytes need no look
    SAFETENSORS,
    SB3_ZIP,
    NOT_A_CHECKPOINT_BIN,
    TORCH_FILE,  # zip, legacy, raw pickle: torch.load's file, told apart by open_checkpoint
)
BY_NAME: tuple[Format, ...] = (DCP_MEMBER,)


def probe_file(path: str, *, given: bool) -> Probe:
    """A regular file's probe (raises `Unreadable` for anything else: a FIFO would block)."""
    size = regular_file_size(path)
    try:
        with open(path, "rb") as handle:
            head: bytes | None = handle.read(HEAD_BYTES)
    except OSError:
        head = None  # the torch file's audit says why it cannot be read
    return Probe(path, os.path.basename(path), Path(path).suffix.lower(), size, head, given)


def probe_folder(path: str, *, given: bool) -> Probe:
    return Probe(path, os.path.basename(path), Path(path).suffix.lower(), None, None, given)


def choose(probe: Probe) -> Format | None:
    """The format of a probed path (see the module docstring); None: not checkpoint-like."""
    found = next((f for f in FORMATS if f.folder == probe.folder and f.recognise(probe)), None)
    if found is None and probe.given and not probe.folder:
        found = TORCH_FILE
    if found is not None:
        found = next((f for f in BY_NAME if f.recognise(probe)), found)
    return found
