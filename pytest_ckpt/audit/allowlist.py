"""torch's weights_only allowlist, read from the installed torch at scan time.

The auditor's verdict must be torch's verdict for *this* torch, so nothing here is a copy:
the default allowlist, the user's `add_safe_globals`, the blocked modules and the Python 2
name mappings all come from `torch._weights_only_unpickler`. What the auditor adds is
knowledge of what each allowed callable *returns* (a tensor, a Parameter, bytes...), which
torch's unpickler learns by calling it and we must not: that is reviewed per torch minor
version, in `torch_allowlists/MAJOR.MINOR.txt` (a callable no review covers returns "?").
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_ckpt.audit.global_kinds import kind_of
from pytest_ckpt.torch_support import (
    REVIEWED_ALLOWLISTS,
    parse_torch_version,
    reviewed_torch_versions,
    shown,
    warn_about_torch,
)

TENSOR = "torch.Tensor"
PARAMETER = "torch.nn.parameter.Parameter"
ORDERED_DICT = "collections.OrderedDict"
COUNTER = "collections.Counter"

# Types a SETITEM(S) may target, and the one an APPEND(S) may (mirrors torch's checks).
SETITEM_TARGETS = frozenset({"builtins.dict", ORDERED_DICT, COUNTER})
APPEND_TARGETS = frozenset({"builtins.list"})


@dataclass(slots=True, frozen=True)
class Allowlist:
    """Names torch accepts in GLOBAL, and what calling each allowed name produces."""

    names: frozenset[str]
    classes: frozenset[str]  # allowed names whose value is a class (NEWOBJ/BUILD targets)
    returns: Mapping[str, str]  # allowed callable -> type name of what it returns
    storage_sizes: Mapping[str, int]  # storage type name -> element size in bytes
    blocked_modules: frozenset[str]
    name_mapping: Mapping[tuple[str, str], tuple[str, str]]
    import_mapping: Mapping[str, str]
    # torch's own default allowlist: the only names `oracle` lets torch's unpickler call
    torch_names: frozenset[str] = frozenset()
    # allowed callables that allocate what their int arguments say (bytearray(n), storages,
    # the legacy tensor constructors): the oracle runs them only on small literal sizes
    allocating: frozenset[str] = frozenset()
    # storage types whose dtype can require grad (floating point and complex)
    grad_storages: frozenset[str] = frozenset()

    def resolve(self, module: str, name: str) -> str:
        """The dotted name torch looks up for GLOBAL module/name (after Python 2 mappings)."""
        if (module, name) in self.name_mapping:
            module, name = self.name_mapping[(module, name)]
        elif module in self.import_mapping:
            module = self.import_mapping[module]
        return f"{module}.{name}"

    def blocked(self, module: str, name: str) -> bool:
        """Is GLOBAL module/name in a module torch blocks? torch maps Python 2 names first
        (`__builtin__.intern` is `sys.intern`), then tests the blocklist."""
        if (module, name) in self.name_mapping:
            module = self.name_mapping[(module, name)][0]
        elif module in self.import_mapping:
            module = self.import_mapping[module]
        return module in self.blocked_modules

    def result_type(self, callable_name: str) -> str:
        """Type name of REDUCE(callable_name, ...)'s result ("?" when unknowable)."""
        if callable_name in self.returns:
            return self.returns[callable_name]
        if callable_name in self.classes:
            return callable_name
        return "?"


@dataclass(slots=True, frozen=True)
class ReviewedAllowlist:
    """One torch minor version's default allowlist as reviewed against the auditor."""

    version: str  # "2.13"
    path: Path
    names: frozenset[str]
    returns: Mapping[str, str]  # allowed callable -> type name of what it returns


@functools.cache
def read_reviewed(path: Path) -> ReviewedAllowlist:
    """Parse a reviewed allowlist: `name` or `name -> TYPE` a line, `#` comments."""
    names, returns = set(), {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _arrow, result = (part.strip() for part in line.partition("->"))
        names.add(name)
        if result:
            returns[name] = result
    return ReviewedAllowlist(path.stem, path, frozenset(names), returns)


def reviewed_allowlist(torch_version: str) -> ReviewedAllowlist:
    """The review that covers `torch_version`: its own minor version's, else the nearest
    older one's (the oldest for a torch older than every review)."""
    parsed = parse_torch_version(torch_version)
    reviewed = reviewed_torch_versions()
    older = [version for version in reviewed if version <= parsed]
    chosen = older[-1] if older else reviewed[0]
    return read_reviewed(REVIEWED_ALLOWLISTS / f"{shown(chosen)}.txt")


def _storage_sizes(default: Mapping[str, Any]) -> dict[str, int]:
    """Element size of every storage type torch can name in a persistent id."""
    import torch

    sizes = {"torch.storage.UntypedStorage": 1}
    for name, value in default.items():
        dtype = getattr(value, "dtype", None)
        if name.endswith("Storage") and isinstance(dtype, torch.dtype):
            sizes[name] = torch._utils._element_size(dtype)
    return sizes


def load_allowlist(extra: Iterable[str] = ()) -> Allowlist:
    """The allowlist torch would apply now, plus `extra` dotted names (the CLI's --allow)."""
    import torch
    import torch._weights_only_unpickler as wo
    from torch._utils import IMPORT_MAPPING, NAME_MAPPING

    version = str(torch.__version__)  # a TorchVersion compares by parsing both sides
    warn_about_torch(version)
    default = wo._get_allowed_globals()
    user = wo._get_user_allowed_globals()  # torch itself adds a few
    base = _from_default(default, version)
    names, classes = base["names"], base["classes"]
    extra = tuple(extra)
    if user or extra:
        names, classes = _with_user_names(base, user, extra)
    return Allowlist(
        names=names,
        classes=classes,
        returns=dict(base["returns"]),
        storage_sizes=dict(base["storage_sizes"]),
        blocked_modules=frozenset(wo._blocklisted_modules),
        name_mapping=dict(NAME_MAPPING),
        import_mapping=dict(IMPORT_MAPPING),
        torch_names=base["names"],
        allocating=base["allocating"],
        grad_storages=base["grad_storages"],
    )


def _with_user_names(
    base: dict[str, Any], user: Mapping[str, Any], extra: tuple[str, ...]
) -> tuple[frozenset[str], frozenset[str]]:
    """The names and classes of the default allowlist, the user's `add_safe_globals` and
    `extra`, kept for the same user names (each a class or not) and extra names: every
    audit asks, and torch's own user globals make this the common case."""
    key = (base["names"], tuple((name, isinstance(v, type)) for name, v in user.items()), extra)
    found = _MERGED.get(key)
    if found is not None:
        return found
    names = frozenset(base["names"] | set(user) | set(extra))
    user_classes = {name for name, value in user.items() if isinstance(value, type)}
    user_others = set(user) - user_classes  # a user's entry overrides the default's
    classes = (base["classes"] - user_others) | user_classes
    # --allow names are taken as classes (allow-listing is how users admit their own
    # types) unless they are known functions, which torch will call but never build.
    classes |= {name for name in extra if kind_of(name) != "function"}
    if len(_MERGED) > 64:  # bounded: a process may be handed many --allow lists
        _MERGED.clear()
    found = _MERGED[key] = (names, frozenset(classes))
    return found


_MERGED: dict[tuple, tuple[frozenset[str], frozenset[str]]] = {}


# What load_allowlist derives from torch's default allowlist alone, for the one dict
# torch hands out (it caches it; held here, so `is` compares the same live object).
_DERIVED: list[tuple[Mapping[str, Any], str, dict[str, Any]]] = []


def _from_default(default: Mapping[str, Any], version: str) -> dict[str, Any]:
    if _DERIVED and _DERIVED[0][0] is default and _DERIVED[0][1] == version:
        return _DERIVED[0][2]
    derived = {
        "names": frozenset(default),
        "classes": frozenset(name for name, value in default.items() if isinstance(value, type)),
        "returns": dict(reviewed_allowlist(version).returns),
        "storage_sizes": _storage_sizes(default),
        "allocating": frozenset(_allocating(default)),
        "grad_storages": frozenset(_grad_storages(default)),
    }
    _DERIVED[:] = [(default, version, derived)]
    return derived


def _grad_storages(default: Mapping[str, Any]) -> set[str]:
    import torch

    names = set()
    for name, value in default.items():
        dtype = getattr(value, "dtype", None)
        if not name.endswith("Storage") or not isinstance(dtype, torch.dtype):
            continue
        if dtype.is_floating_point or dtype.is_complex:
            names.add(name)
    return names


def _allocating(default: Mapping[str, Any]) -> set[str]:
    import torch

    names = {"builtins.bytearray", "torch.storage.UntypedStorage", "torch.storage.TypedStorage"}
    names |= {f"{cls.__module__}.{cls.__name__}" for cls in torch._tensor_classes}
    names.add("torch.Tensor")
    return names & set(default)


def default_allowlist_names() -> list[str]:
    """torch's default allowlist, sorted (for the contract test)."""
    import torch._weights_only_unpickler as wo

    return sorted(wo._get_allowed_globals())
