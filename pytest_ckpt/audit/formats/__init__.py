"""The file kinds the auditor reads, one module each, behind one interface, and the folder
walk beside them.

Each kind is a `Format`: a `name`, a `recognise(probe)` that decides from a `Probe` (the
path, its size and first bytes: cheap, never unpickling) whether a path is one of it, and
an `audit(...)` to a `Report`. The kinds, each a module-level `FORMAT` (or two): the torch
file (`torch_archive`: what `torch.load` reads, a zip, a legacy file or a raw pickle, told
apart as torch.load tells them; `legacy` reads the legacy format for it; `audit_file` is
its audit), `safetensors`, `sb3_zip`, `side_files` (JSON beside a checkpoint, and a `.bin`
that `bin_files` finds is not one) and `dcp_format` (a DCP folder, and a file named like a
DCP member; `dcp/` holds the DCP audit itself). `table` is the one ordered table that says
which kind a path is; `walk` (what a PATH given to `pytest-ckpt audit` is, and the folder
walk) consults only the table; `walk_report` renders what a walk found.

This module imports no kind (each imports it), so `pytest_ckpt.audit` can import
`torch_archive` without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pytest_ckpt.audit import Report
    from pytest_ckpt.audit.allowlist import Allowlist

SKIPPED = "skipped"  # the `format` of a file listed but not audited
HEAD_BYTES = 16  # what a recogniser may look at: a zip's, a pickle's, safetensors' magic
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_HEADS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # protocols 2 to 5
CHECKPOINT_SUFFIXES = frozenset(
    {".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".safetensors", ".distcp"}
)


@dataclass(slots=True, frozen=True)
class Probe:
    """What a format may look at to recognise a path. `size` is None for a folder; `head`
    (the first `HEAD_BYTES`) is None for a folder and for a file that could not be read (the
    torch file's audit says why). `given`: named on the command line, not met in a walk."""

    path: str
    name: str
    suffix: str  # lower-case, with its dot; "" for none
    size: int | None
    head: bytes | None
    given: bool

    @property
    def folder(self) -> bool:
        return self.size is None

    @property
    def zip(self) -> bool:
        return self.head is not None and self.head[:4] == ZIP_MAGIC

    @property
    def pickle(self) -> bool:
        """A pickle with a protocol header (2 to 5): what torch.save and pickle.dump write."""
        return self.head is not None and self.head[:2] in PICKLE_HEADS


class Audit(Protocol):
    """A format's audit: never raises for a bad file (an unreadable one is a `Report` with
    `error`). `allow`: extra names (a DCP `.metadata` reads them too); `map_location`: as
    for `torch.load`."""

    def __call__(
        self,
        path: str,
        allowlist: Allowlist,
        *,
        allow: tuple[str, ...],
        map_location: str | None,
    ) -> Report: ...


@dataclass(slots=True, frozen=True)
class Format:
    """One kind of file (or folder: `folder=True`) the auditor reads. `recognise` must be
    cheap and run nothing from the file: it sees a `Probe`, and may at most list a zip."""

    name: str
    recognise: Callable[[Probe], bool]
    audit: Audit
    folder: bool = False
