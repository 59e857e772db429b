"""What a global named in a pickle is, found without running anything from the file.

`REDUCE(GLOBAL X, (value,))` is how pickle writes an Enum member, and also how a hostile
file writes `builtins.print("x")`, `timeit.timeit(code)` or `pdb.run(code)`. Static migrate
converts the first (member -> its value) and must refuse the others, so it asks here what
`X` is: an already-imported module is inspected with `inspect.getattr_static` (no
descriptor, no module `__getattr__` runs); otherwise the module's source is found on
`sys.path` without importing it (`importlib.machinery.PathFinder`) and read with `ast`.
What cannot be told apart this way is UNKNOWN, and refused.
"""

from __future__ import annotations

import ast
import enum
import inspect
import sys
from dataclasses import dataclass
from importlib.machinery import PathFinder
from typing import Any

ENUM, FUNCTION, OTHER, UNKNOWN = "Enum class", "function", "class that is not an Enum", "unknown"
_ENUM_BASES = ("Enum", "IntEnum", "StrEnum", "Flag", "IntFlag", "ReprEnum")
_MAX_SOURCE = 4 << 20  # a module's source larger than this is not parsed


@dataclass(slots=True, frozen=True)
class Found:
    """What a global is; for an Enum class, its member values when they are known."""

    kind: str
    values: tuple[Any, ...] | None = None


def find_global(qualname: str) -> Found:
    """What the dotted global `qualname` (`module.Name` or `module.Outer.Inner`) names."""
    parts = qualname.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        return Found(UNKNOWN)
    for cut in range(len(parts) - 1, 0, -1):  # the longest imported module prefix
        module = sys.modules.get(".".join(parts[:cut]))
        if module is not None:
            found = _live(module, parts[cut:])
            if found.kind != UNKNOWN:
                return found
            break  # a submodule not imported yet: read its source
    return _from_source(parts)


def _live(obj: Any, attrs: list[str]) -> Found:
    for attr in attrs:
        try:
            obj = inspect.getattr_static(obj, attr)
        except AttributeError:
            return Found(UNKNOWN)
    if isinstance(obj, enum.EnumMeta):
        members = inspect.getattr_static(obj, "_value2member_map_", None)
        return Found(ENUM, tuple(members) if isinstance(members, dict) else None)
    if inspect.isclass(obj):
        return Found(OTHER)
    if callable(obj) or isinstance(obj, (staticmethod, classmethod)):
        return Found(FUNCTION)
    return Found(UNKNOWN)


def _from_source(parts: list[str]) -> Found:
    """The longest prefix of `parts` that is a module with Python source, read unimported."""
    for cut in range(len(parts) - 1, 0, -1):
        origin = _origin_of(parts[:cut])
        if origin is not None:
            return _in_file(origin, parts[cut:])
    return Found(UNKNOWN)


def _origin_of(module: list[str]) -> str | None:
    """The source file of the module `module`, found on sys.path (or the `__path__` of an
    already-imported parent package) without importing it."""
    path: list[str] | None = None
    spec = None
    for depth in range(len(module)):
        name = ".".join(module[: depth + 1])
        live = sys.modules.get(name)
        if live is not None:
            spec = getattr(live, "__spec__", None)
        elif depth and path is None:
            return None  # the parent is not a package
        else:
            spec = PathFinder.find_spec(name, path)
        if spec is None:
            return None
        locations = spec.submodule_search_locations
        path = list(locations) if locations else None
    return spec.origin if spec is not None else None


def _in_file(origin: str | None, names: list[str]) -> Found:
    if not origin or not origin.endswith(".py"):
        return Found(UNKNOWN)
    try:
        with open(origin, "rb") as handle:
            source = handle.read(_MAX_SOURCE + 1)
        if len(source) > _MAX_SOURCE:
            return Found(UNKNOWN)
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return Found(UNKNOWN)
    body: list[ast.stmt] = tree.body
    for depth, name in enumerate(names):
        node = _defined(body, name)
        if node is None:
            return Found(UNKNOWN)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return Found(FUNCTION) if depth == len(names) - 1 else Found(UNKNOWN)
        if depth < len(names) - 1:
            body = node.body
            continue
        if any(_base_name(base) in _ENUM_BASES for base in node.bases):
            return Found(ENUM, _literal_values(node))
        return Found(OTHER)
    return Found(UNKNOWN)


def _defined(body: list[ast.stmt], name: str) -> ast.ClassDef | ast.FunctionDef | None:
    """The last top-level `class name` or `def name` of `body` (a later one wins)."""
    found = None
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name == name:
                found = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.Import, ast.ImportFrom)):
            targets = _bound_names(node)
            if name in targets:
                found = None  # rebound to something we cannot read
    return found


def _bound_names(node: ast.stmt) -> set[str]:
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign):
        return {node.target.id} if isinstance(node.target, ast.Name) else set()
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return set()


def _base_name(base: ast.expr) -> str:
    if isinstance(base, ast.Attribute):
        return base.attr
    return base.id if isinstance(base, ast.Name) else ""


def _literal_values(node: ast.ClassDef) -> tuple[Any, ...] | None:
    """The member values of an Enum class body when every member is a plain literal."""
    values = []
    for statement in node.body:
        if isinstance(statement, ast.Assign) and all(
            isinstance(t, ast.Name) and not t.id.startswith("_") for t in statement.targets
        ):
            try:
                values.append(ast.literal_eval(statement.value))
            except ValueError:
                return None  # auto(), a call, a tuple for __new__: values unknown
    return tuple(values)
