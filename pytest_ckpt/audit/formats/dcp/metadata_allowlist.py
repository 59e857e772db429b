"""DCP's metadata allowlist, read from the installed torch.

A DCP folder's `.metadata` is `pickle.dump(Metadata)`: DCP's own dataclasses (every class
defined in `torch.distributed.checkpoint.metadata`, and the dataclasses of the filesystem
storage layer, whose `_StorageInfo` records where each item lies) and what their fields
hold: `torch.Size`, dtypes and layouts as they pickle (a dtype by its name, a layout through
the function its copyreg reducer names), and the path class the writer stores as
`storage_meta.checkpoint_id`. Every name is taken from the object itself, so a torch that
moves or renames one changes the allowlist with it; nothing here is a copied list.

One allowlist serves both readers: the static machine (`metadata_scan`) and the restricted
unpickler (`safe_reader`), which returns the very objects listed here and imports nothing.
"""

from __future__ import annotations

import copyreg
import dataclasses
import enum
import functools
import importlib
import pathlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_ckpt.audit.allowlist import Allowlist


@dataclass(slots=True, frozen=True)
class DcpAllowlist:
    """The globals a `.metadata` may name: dotted name -> the object it stands for."""

    objects: Mapping[str, Any]
    static: Allowlist  # the same names, as the static machine reads them
    # the Enum classes among them: calling one returns a shared member, not a new object
    enums: frozenset[str] = frozenset()

    @property
    def names(self) -> frozenset[str]:
        return self.static.names


def _dotted(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _torch_values() -> tuple[dict[str, Any], dict[str, str]]:
    """dtypes and layouts by the global their pickle names; the layout reducer's return type."""
    import torch

    objects: dict[str, Any] = {"torch.Size": torch.Size}
    returns: dict[str, str] = {}
    for value in vars(torch).values():
        if isinstance(value, torch.dtype):
            objects[f"torch.{value.__reduce__()}"] = value
        elif isinstance(value, torch.layout):
            reducer = copyreg.dispatch_table.get(torch.layout)
            func = (reducer(value) if reducer else value.__reduce_ex__(4))[0]
            objects[_dotted(func)] = func
            returns[_dotted(func)] = "torch.layout"
    return objects, returns


def _import_name(name: str) -> Any:
    """An extra name the user allowed: import its module, then look the name up."""
    module_name, _, attribute = name.rpartition(".")
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot allow {name}: {module_name} does not import: {err}") from None
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise ValueError(f"cannot allow {name}: {module_name} has no attribute {attribute}")
        value = getattr(value, part)
    return value


@functools.lru_cache(maxsize=8)
def _cached(extra: tuple[str, ...]) -> DcpAllowlist:
    import torch.distributed.checkpoint.filesystem as filesystem
    import torch.distributed.checkpoint.metadata as metadata

    objects = {
        _dotted(value): value
        for value in vars(metadata).values()
        if isinstance(value, type) and value.__module__ == metadata.__name__
    }
    objects.update(
        (_dotted(value), value)
        for value in vars(filesystem).values()
        if isinstance(value, type)
        and dataclasses.is_dataclass(value)
        and value.__module__ == filesystem.__name__
    )
    path_class = type(pathlib.Path())
    objects[_dotted(path_class)] = path_class
    torch_objects, returns = _torch_values()
    objects.update(torch_objects)
    objects.update((name, _import_name(name)) for name in extra)
    static = Allowlist(
        names=frozenset(objects),
        classes=frozenset(name for name, value in objects.items() if isinstance(value, type)),
        returns=returns,
        storage_sizes={},
        blocked_modules=frozenset(),  # the restricted unpickler has no blocklist: only names
        name_mapping={},  # nor Python 2 name mappings: it looks names up as written
        import_mapping={},
    )
    enums = frozenset(
        name
        for name, value in objects.items()
        if isinstance(value, type) and issubclass(value, enum.Enum)
    )
    return DcpAllowlist(objects=objects, static=static, enums=enums)


def load_dcp_allowlist(extra: Iterable[str] = ()) -> DcpAllowlist:
    """DCP's metadata allowlist for the installed torch, plus `extra` dotted names (a custom
    planner's or storage writer's own classes; raises ValueError for one that does not
    import)."""
    return _cached(tuple(sorted(set(extra))))
