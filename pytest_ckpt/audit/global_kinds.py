"""What a global a file names is (a class, an Enum class, a function, code, or unknown), decided
without importing it: THE answer, for the auditor's advice and for migrate alike.

Advice may only ever offer a *class* for allow-listing, and migrate may only turn
`REDUCE(X, (value,))` into a value when X is an Enum class: torch's REDUCE calls whatever is
allowed with arguments the file chooses, so an allowed function is code the file can run
(`timeit.timeit("...")` looks exactly like an Enum member built from its value). The file
alone cannot tell a class from a function, so this module asks, in order:

1. a curated list of names whose call runs code or touches the system (`CODE_RUNNING_*`):
   these are always "code";
2. a module the auditor's own process has already imported (never `__main__`, which is
   ours, not the saver's): the name is looked up with `inspect.getattr_static`, which runs no
   descriptor, property or module `__getattr__`;
3. the module's source, found and read by `module_source` (nothing imported or run) in the
   folders of `search_path()`: those given with `searching()` (`--path DIR`, the plugin's
   rootdir), the working directory, then `sys.path`;
4. otherwise "unknown": unknown callables are never advised, never converted.
"""

from __future__ import annotations

import enum
import inspect
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pytest_ckpt.audit import module_source

Kind = Literal["class", "function", "code", "unknown"]
# Modules any of whose globals, called during unpickling, can run code or touch the system.
CODE_RUNNING_MODULES = (
    "os", "posix", "nt", "sys", "subprocess", "shutil", "socket", "importlib", "runpy",
    "pickle", "_pickle", "marshal", "ctypes", "webbrowser", "pty", "code", "codeop", "types",
    "functools", "operator", "timeit", "pdb", "bdb", "cProfile", "profile", "trace",
    "shelve", "dbm", "multiprocessing", "threading", "_thread", "asyncio", "signal",
    "tempfile", "glob", "io", "_io", "zipimport", "pkgutil", "site", "inspect", "ast",
    "doctest", "unittest", "pydoc", "idlelib", "tkinter", "http", "urllib", "ftplib",
    "smtplib", "telnetlib", "xmlrpc", "logging", "sqlite3", "torch.hub", "torch.jit",
    "torch._C._jit", "torch.utils.cpp_extension", "torch.ops", "torch._ops", "torch.library",
    "torch.package", "torch.serialization", "torch._dynamo", "torch._inductor",
    "torch.compiler", "torch.fx", "torch.distributed.rpc", "torch.distributed.run",
    "torch.distributed.launch", "torch.distributed.elastic", "torch.multiprocessing",
    "torch._export", "torch.export",
    "torch.onnx", "numpy.testing", "numpy.f2py", "numpy.distutils", "numpy.lib.format",
    "numpy.lib.npyio", "setuptools", "distutils", "pip",
    # classes whose constructor opens, writes or connects: "only classes" is not enough
    "zipfile", "tarfile", "gzip", "bz2", "lzma", "mmap", "fileinput", "mailbox", "wave",
    "sunau", "aifc", "_ctypes", "torch._C._distributed_c10d", "torch._C._distributed_rpc",
    "torch.distributed.distributed_c10d", "torch.utils.tensorboard", "antigravity", "this",
    "turtle", "curses", "readline", "rlcompleter", "ensurepip", "venv", "compileall",
    "py_compile", "zipapp", "modulefinder", "imp",
)  # fmt: skip
_CODE_RUNNING_MODULES = frozenset(CODE_RUNNING_MODULES)
CODE_RUNNING_NAMES = frozenset(
    {
        "builtins.eval", "builtins.exec", "builtins.compile", "builtins.open",
        "builtins.getattr", "builtins.setattr", "builtins.delattr", "builtins.__import__",
        "builtins.globals", "builtins.locals", "builtins.vars", "builtins.breakpoint",
        "builtins.input", "builtins.help", "builtins.exit", "builtins.quit",
        "builtins.memoryview", "torch.load", "torch.save", "torch.compile",
        "torch._load_global_deps", "torch.ops.load_library", "numpy.load", "numpy.save",
        "numpy.loadtxt", "numpy.fromfile", "numpy.memmap", "numpy.genfromtxt",
    }
)  # fmt: skip
MAX_NAME = 500  # longer dotted names are no Python identifier anyone allow-lists
# Inside `searching()`: the folders it added and the working directory when it was entered.
_SEARCHED: ContextVar[tuple[tuple[str, ...], str | None] | None] = ContextVar(
    "pytest_ckpt_searched", default=None
)


@dataclass(slots=True, frozen=True)
class GlobalKind:
    """What a global names: its `kind`; for an Enum class, `enum` and its member values
    when they are known (None: any value may be a member)."""

    kind: Kind
    enum: bool = False
    values: tuple[Any, ...] | None = None


_UNKNOWN = GlobalKind("unknown")


def runs_code(qualname: str) -> bool:
    """Does calling (or even naming) this global run code or touch the system?"""
    if qualname in CODE_RUNNING_NAMES:
        return True
    module = qualname.rpartition(".")[0]
    # the module or a package above it is listed: one set lookup per level of the name, not
    # one comparison per listed module (a file with findings asks for each of them)
    return any(prefix in _CODE_RUNNING_MODULES for prefix in _packages_of(module))


def _packages_of(module: str) -> Iterator[str]:
    """`a.b.c` -> `a`, `a.b`, `a.b.c`."""
    end = module.find(".")
    while end >= 0:
        yield module[:end]
        end = module.find(".", end + 1)
    yield module


def kind_of(qualname: str) -> Kind:
    """ "class", "function", "code" (see `runs_code`) or "unknown" for a dotted global name."""
    return describe_global(qualname).kind


def describe_global(qualname: str) -> GlobalKind:
    """What the dotted global `qualname` (`module.Name`, `module.Outer.Inner`) names."""
    return _describe(qualname, search_path())


@contextmanager
def searching(folders: Iterable[str | os.PathLike[str]]) -> Iterator[None]:
    """Also search `folders` (first, in order) for module sources inside the block: the
    CLI's `--path DIR`, the plugin's rootdir. The working directory searched is the one the
    block was entered in (read once: `os.getcwd()` costs more than the answer)."""
    outer = _SEARCHED.get()
    added = tuple(os.path.abspath(folder) for folder in folders)
    token = _SEARCHED.set((added + outer[0], outer[1]) if outer else (added, _cwd()))
    try:
        yield
    finally:
        _SEARCHED.reset(token)


def search_path() -> tuple[str, ...]:
    """Where a module's source is looked for, in order: the `searching()` folders, the
    working directory, `sys.path` (a standard-library module: `sys.path` only)."""
    added, cwd = _SEARCHED.get() or ((), _cwd())
    return _folders(added, cwd, tuple(sys.path))


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the working directory was removed
        return None


@lru_cache(maxsize=64)
def _folders(searched: tuple[str, ...], cwd: str | None, path: tuple[str, ...]) -> tuple[str, ...]:
    here = [] if cwd is None else [cwd]
    folders = [*searched, *here, *(os.path.join(cwd or "", entry) for entry in path)]
    return tuple(dict.fromkeys(os.path.normpath(folder) for folder in folders))


def clear_caches() -> None:
    """Forget what was read (a test that rewrites a module's source in place)."""
    _describe.cache_clear()
    module_source.clear_cache()


@lru_cache(maxsize=4096)
def _describe(qualname: str, roots: tuple[str, ...]) -> GlobalKind:
    if runs_code(qualname):
        return GlobalKind("code")
    parts = qualname.split(".")
    if len(qualname) > MAX_NAME or len(parts) < 2 or not all(p.isidentifier() for p in parts):
        return _UNKNOWN
    if parts[0] == "__main__":
        return _UNKNOWN
    for cut in range(len(parts) - 1, 0, -1):  # the longest imported module prefix
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        found = _live(module, parts[cut:])
        if found is not None:
            return found
        if inspect.getattr_static(module, "__path__", None) is None:
            return _UNKNOWN  # an imported module without that name
        break  # a submodule not imported yet: read its source
    return _from_source(parts, roots)


def _live(obj: object, attrs: list[str]) -> GlobalKind | None:
    """What `obj.attr1.attr2...` is, read without running a descriptor; None when missing."""
    sentinel = object()
    for attr in attrs:
        obj = inspect.getattr_static(obj, attr, sentinel)
        if obj is sentinel:
            return None
    if isinstance(obj, enum.EnumMeta):
        members = inspect.getattr_static(obj, "_value2member_map_", None)
        return GlobalKind("class", True, tuple(members) if isinstance(members, dict) else None)
    if isinstance(obj, type):
        return GlobalKind("class")
    if callable(obj) or isinstance(obj, (staticmethod, classmethod)):
        return GlobalKind("function")
    return _UNKNOWN


def _from_source(parts: list[str], roots: tuple[str, ...]) -> GlobalKind:
    """The longest prefix of `parts` that is a module with Python source, read unimported."""
    for cut in range(len(parts) - 1, 0, -1):
        origin = module_source.source_of(".".join(parts[:cut]), roots)
        if origin is None:
            continue
        names = module_source.definitions(origin)
        *outer, last = parts[cut:]
        for name in outer:  # Outer.Inner: classes nested in classes
            found = names.get(name)
            if found is None or found.kind != "class":
                return _UNKNOWN
            names = found.members
        found = names.get(last, module_source.UNKNOWN)
        return GlobalKind(found.kind, found.enum, found.values)
    return _UNKNOWN


def advisable(qualname: str) -> bool:
    """May advice offer this name for allow-listing? Only classes that run no code when
    called, and numpy's array and scalar rebuilders (`numpy_pickles.REBUILDERS`)."""
    from pytest_ckpt.audit.numpy_pickles import REBUILDERS

    return qualname in REBUILDERS or kind_of(qualname) == "class"


def display(name: str, limit: int = 200) -> str:
    """A name from the file as reports show it: cut past `limit` characters, with its length."""
    if len(name) <= limit:
        return name
    return f"{name[:limit]}...({len(name)} characters)"
