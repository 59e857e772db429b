"""Files frameworks write beside their checkpoints that are not checkpoints, as formats of
the table (`audit.formats.table`): JSON (`trainer_state.json`: parsed, so a corrupt one is
said, but nothing in it is code), and a `.bin` that nothing reads as a checkpoint (a raw
`numpy.tofile` array: `bin_files` decides), listed as skipped instead of unreadable.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from pytest_ckpt.audit import Report
from pytest_ckpt.audit.formats import SKIPPED, Format, Probe
from pytest_ckpt.audit.formats.bin_files import NOT_A_CHECKPOINT, is_checkpoint_bin
from pytest_ckpt.audit.formats.safetensors import looks_like_safetensors

if TYPE_CHECKING:
    from pytest_ckpt.audit.allowlist import Allowlist

MAX_JSON_BYTES = 64 << 20


def check_json(path: str) -> Report:
    """A JSON file: valid (nothing in it runs), too big to check, or not valid JSON."""
    try:
        size = os.path.getsize(path)
        if size > MAX_JSON_BYTES:
            return Report(path, "json", (), summary=f"{size} bytes: too big to check, not read")
        with open(path, "rb") as handle:
            json.loads(handle.read(MAX_JSON_BYTES + 1).decode("utf-8"))
    except OSError as err:
        return Report(path, "json", (), error=f"cannot read it: {err.strerror or err}")
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        return Report(path, "json", (), error=f"not valid JSON: {str(err).splitlines()[0]}")
    return Report(path, "json", (), summary="valid JSON, not a checkpoint: nothing in it runs")


def _is_json(probe: Probe) -> bool:
    return probe.suffix == ".json"


def _check_json(
    path: str, allowlist: Allowlist, *, allow: tuple[str, ...], map_location: str | None
) -> Report:
    return check_json(path)


def _is_not_a_checkpoint_bin(probe: Probe) -> bool:
    """A `.bin` that is not a zip, safetensors or a pickle with a protocol header (those are
    audited as what they are) and that `bin_files` finds nothing reads as a checkpoint."""
    if probe.suffix != ".bin" or probe.head is None or probe.size is None:
        return False
    if probe.zip or probe.pickle or looks_like_safetensors(probe.head):
        return False
    return not is_checkpoint_bin(probe.path, probe.size)


def _skip_bin(
    path: str, allowlist: Allowlist, *, allow: tuple[str, ...], map_location: str | None
) -> Report:
    return Report(path, SKIPPED, (), summary=NOT_A_CHECKPOINT)


JSON_FORMAT = Format("JSON", _is_json, _check_json)
NOT_A_CHECKPOINT_BIN = Format("not-a-checkpoint .bin", _is_not_a_checkpoint_bin, _skip_bin)
