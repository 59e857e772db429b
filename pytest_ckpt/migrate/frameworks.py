"""What a framework's own loader makes of a migrated checkpoint, where migrating is not enough.

Lightning's `load_from_checkpoint` rebuilds the module by calling its `__init__` with the
checkpoint's `hyper_parameters` as keyword arguments. An object there (a dataclass config,
a module) is migrated to a dict, which `__init__` then receives as is: the module reads
`config.hidden` and fails (`'dict' object has no attribute 'hidden'`). Migration cannot see
the module's class (the checkpoint does not name it), so it refuses such a file unless an
adapter (`--adapt`, the project's own code) takes the dict on.
"""

from __future__ import annotations

from typing import Any

from pytest_ckpt.migrate.rules import MODULE, OBJECT

LIGHTNING_KEYS = ("pytorch-lightning_version", "hyper_parameters")
_HPARAMS = "root['hyper_parameters']"


def lightning_refusals(result: Any, conversions: list[str]) -> list[str]:
    """One line per object under a Lightning checkpoint's `hyper_parameters` that became a
    dict (read from the conversion report, by path); empty for any other checkpoint."""
    if type(result) is not dict or not all(key in result for key in LIGHTNING_KEYS):
        return []
    refusals = []
    for line in conversions:
        ending = next((f" {r.becomes}" for r in (OBJECT, MODULE) if line.endswith(r.becomes)), "")
        if not line.startswith(_HPARAMS) or not ending:
            continue
        path, _, cls = line[: -len(ending)].rpartition(": ")
        name = cls.rsplit(".", 1)[-1]
        refusals.append(
            f"{path}: a {cls} in Lightning's hyper_parameters becomes a dict, which "
            f"load_from_checkpoint passes to your module's __init__ as is; fix: let __init__ "
            f"take a dict too ({name}(**value) when given one) and migrate with --adapt "
            f"MODULE:FUNC (your function; it may return the checkpoint as is), or save "
            f"hyper-parameters as primitives"
        )
    return refusals
