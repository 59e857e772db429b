"""What a module's source defines, read with `ast` from the file import would find, never run.

`global_kinds` asks here about modules the auditor's process has not imported. Finding the
file: `importlib.machinery.PathFinder` (it imports nothing, not even parent packages) over
the folders `global_kinds` searches; a parent package already imported is searched through
its own `__path__`, as import would. A standard-library name is only looked for on
`sys.path`: a stray `pathlib.py` in the working directory never answers for the interpreter's.

Reading the file: a name is a class or a function only when an unconditional `class` or
`def` at the top of its scope binds it last and nothing else in the module can rebind it (an
assignment, an import, `del`, a definition inside `if`/`try`/`for`/`with`/`match`, a
`global` statement anywhere, a later `from m import *`). A module that rewrites its own
namespace (`globals()`, `exec`, `setattr` at module level) defines nothing we can trust.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.machinery import PathFinder
from typing import Any, Literal

Kind = Literal["class", "function", "unknown"]
MAX_SOURCE = 4 << 20  # a module's source larger than this is not parsed
ENUM_BASES = frozenset({"Enum", "IntEnum", "StrEnum", "Flag", "IntFlag", "ReprEnum"})
ENUM_METACLASSES = frozenset({"EnumMeta", "EnumType"})
_REWRITERS = frozenset({"globals", "locals", "vars", "exec", "eval"})
_SETTERS = frozenset({"setattr", "delattr"})  # on anything but a plain name: the module?
_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(slots=True, frozen=True, eq=False)
class Definition:
    """One name of a scope: a class (an Enum class with its member values when every member
    is a plain literal; its own scope in `members`), a function, or unknown."""

    kind: Kind
    enum: bool = False
    values: tuple[Any, ...] | None = None
    members: dict[str, Definition] = field(default_factory=dict)


UNKNOWN = Definition("unknown")
FUNCTION = Definition("function")


def source_of(module: str, roots: Sequence[str]) -> str | None:
    """The .py file of `module` as import would find it from `roots` (the top-level folders
    searched, in order), without importing anything; None when there is none."""
    parts = module.split(".")
    locations: list[str] | None = None
    spec = None
    for depth in range(len(parts)):
        name = ".".join(parts[: depth + 1])
        live = sys.modules.get(name)
        if live is not None and name != "__main__":
            spec = getattr(live, "__spec__", None)
        elif depth and locations is None:
            return None  # the parent is not a package
        else:
            search = locations if depth else _top_level_roots(parts[0], roots)
            try:
                spec = PathFinder.find_spec(name, search)
            except (ImportError, ValueError, OSError):
                return None
        if spec is None:
            return None
        found = spec.submodule_search_locations
        locations = list(found) if found else None
    origin = getattr(spec, "origin", None)
    return origin if isinstance(origin, str) and origin.endswith(".py") else None


def _top_level_roots(top: str, roots: Sequence[str]) -> list[str]:
    if top in sys.stdlib_module_names:
        return [os.path.abspath(entry or os.curdir) for entry in sys.path]
    return list(roots)


def definitions(origin: str) -> dict[str, Definition]:
    """The top-level names of the module whose source is `origin` (parsed once per version
    of the file)."""
    try:
        stat = os.stat(origin)
    except OSError:
        return {}
    return _parsed(origin, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=256)
def _parsed(origin: str, _mtime: int, size: int) -> dict[str, Definition]:
    if size > MAX_SOURCE:
        return {}
    try:
        with open(origin, "rb") as handle:
            tree = ast.parse(handle.read(MAX_SOURCE + 1))
        if _rewrites_itself(tree):
            return {}
        names = scope(tree.body)
        for rebound in _declared_global(tree):
            names[rebound] = UNKNOWN
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return {}
    return names


def clear_cache() -> None:
    _parsed.cache_clear()


def scope(body: list[ast.stmt]) -> dict[str, Definition]:
    """What each name of a module or class body is, in statement order (a later binding
    wins, as at run time)."""
    names: dict[str, Definition] = {}
    for node in body:
        if isinstance(node, ast.ClassDef):
            names[node.name] = _class(node, names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = FUNCTION
        elif isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            names = dict.fromkeys(names, UNKNOWN)  # any name may be rebound
        else:
            for name in _bound(node):
                names[name] = UNKNOWN
    return names


def _class(node: ast.ClassDef, earlier: dict[str, Definition]) -> Definition:
    """A class; an Enum class when a base is one of enum's (or an Enum class defined earlier
    in the same scope) or its metaclass is enum's."""
    is_enum = any(
        _last_name(base) in ENUM_BASES
        or (isinstance(base, ast.Name) and earlier.get(base.id, UNKNOWN).enum)
        for base in node.bases
    ) or any(
        k.arg == "metaclass" and _last_name(k.value) in ENUM_METACLASSES for k in node.keywords
    )
    members = scope(node.body)
    return Definition("class", is_enum, _literal_values(node) if is_enum else None, members)


def _last_name(expr: ast.expr) -> str:
    if isinstance(expr, ast.Attribute):
        return expr.attr
    return expr.id if isinstance(expr, ast.Name) else ""


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


def _bound(node: ast.stmt) -> set[str]:
    """Every name a statement other than a top-level def/class may bind (over-approximated:
    names bound inside functions nested in it count too)."""
    names: set[str] = set()
    for inner in ast.walk(node):
        if isinstance(inner, ast.Name) and isinstance(inner.ctx, (ast.Store, ast.Del)):
            names.add(inner.id)
        elif isinstance(inner, _DEFINITIONS):
            names.add(inner.name)
        elif isinstance(inner, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in inner.names}
        elif isinstance(inner, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and inner.name:
            names.add(inner.name)
        elif isinstance(inner, ast.MatchMapping) and inner.rest:
            names.add(inner.rest)
    return names


def _declared_global(tree: ast.Module) -> set[str]:
    """Names a `global` statement anywhere may rebind at module level."""
    return {name for node in ast.walk(tree) if isinstance(node, ast.Global) for name in node.names}


def _rewrites_itself(tree: ast.Module) -> bool:
    """Does a module-level statement (outside any def or class) call `globals()`, `exec`,
    `setattr(sys.modules[__name__], ...)`: a namespace no reading of the source can follow?"""
    todo: list[ast.AST] = [n for n in tree.body if not isinstance(n, _DEFINITIONS)]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in _REWRITERS:
                return True
            if node.func.id in _SETTERS and node.args and not isinstance(node.args[0], ast.Name):
                return True  # setattr(sys.modules[__name__], ...)
        todo.extend(
            child
            for child in ast.iter_child_nodes(node)
            if not isinstance(child, (*_DEFINITIONS, ast.Lambda))
        )
    return False
