"""Which archive member torch reads for a storage key, and when it checks it.

torch.save names storages "0", "1", ...; torch.load takes whatever key the persistent id
holds, reads member `f"data/{key}"` and caches the storage under the key itself (so `0`,
`"0"` and `b"0"` are three storages of one member, and `1` and `True` one storage). The
rules check a key here when its member name is plain text or an int's digits; any other key
(bytes, a float, a tuple) torch formats as the object it is, so torch's own unpickler judges
it (stage 2). `judged_by_gate` says which keys the stage-2 gate may read as text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_ckpt.audit.global_kinds import display
from pytest_ckpt.audit.opcodes import Blob


def storage_key(key: Any, data: bytes) -> tuple[Any, str] | None:
    """(what torch caches the storage under, the member name after `data/`) for a key of a
    persistent id in `data`, the pickle; None for a key stage 2 judges.

    Text of any length (a protocol-1 byte string too: torch.load decodes it, as UTF-8)
    is read whole from the pickle; an int or bool is its `str`."""
    if type(key) is int or type(key) is bool:
        return key, f"{key}"
    if type(key) is not Blob:
        return None
    if key.kind == "str" and key.complete:
        return key.preview, key.preview
    text = data[key.start : key.start + key.length].decode("utf-8", "surrogatepass")
    return text, text


def judged_by_gate(pid: Any) -> bool:
    """Whether a persistent id's key is one the stage-2 gate reads (`OracleGate.storage`
    compares its text, cut at 80 characters, with the rules' record): short text only."""
    items = getattr(pid, "items", None)
    key = items[2] if items is not None and len(items) == 5 else None
    return key is None or (type(key) is Blob and key.kind == "str" and key.complete)


def storage_problem(
    decls: dict[Any, tuple[str, int]],
    sizes: Mapping[str, int],
    element_sizes: Mapping[str, int],
    found: tuple[Any, str],
    type_name: str,
    numel: int,
) -> str | None:
    """Why torch would refuse this storage reference of a zip checkpoint, if it would.

    torch loads a key once, on its first reference (when it holds bytes), from member
    `data/<member>`: it must hold exactly numel x element size bytes. Later references to
    an equal key reuse it unchecked. `decls` (key -> first type and numel) is updated."""
    key, member = found
    first = decls.get(key)
    if first is not None and first[1] != 0:
        return None
    decls[key] = (type_name, numel)
    shown = display(member)
    size = sizes.get(member)
    if size is None:
        return f"storage {shown!r} is not in the archive (data/{shown} missing)"
    element = element_sizes.get(type_name)
    if element is None:
        return f"storage {shown!r} has unknown storage type {type_name}"
    if numel < 0 or numel * element != size:
        return (
            f"storage {shown!r} declares {numel} x {element} bytes but the archive holds "
            f"{size}: torch needs them equal"
        )
    return None
