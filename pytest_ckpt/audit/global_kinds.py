"""Is a global a file names a class, a function, or unknown, decided without importing it.

Advice may only ever offer a *class* for allow-listing: torch's REDUCE calls whatever is
allowed with arguments the file chooses, so an allowed function is code the file can run
(`timeit.timeit("...")` looks exactly like an Enum member built from its value). The file
alone cannot tell a class from a function, so this module asks, in order:

1. a curated list of names whose call runs code or touches the system (`CODE_RUNNING_*`):
   these are always "code";
2. a module the auditor's own process has already imported (never `__main__`, which is
   ours, not the saver's): the name is looked up with `inspect.getattr_static`, which runs no
   descriptor, property or module `__getattr__`;
3. the module's source, located with `PathFinder` (which imports nothing, not even parent
   packages) and read with `ast`: a top-level `class Name` is a class, a `def Name` a
   function;
4. otherwise "unknown", and unknown callables are never advised.
"""

from __future__ import annotations

import ast
import inspect
import sys
from functools import lru_cache
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Literal

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


def runs_code(qualname: str) -> bool:
    """Does calling (or even naming) this global run code or touch the system?"""
    if qualname in CODE_RUNNING_NAMES:
        return True
    module = qualname.rpartition(".")[0]
    return any(module == m or module.startswith(m + ".") for m in CODE_RUNNING_MODULES)


@lru_cache(maxsize=4096)
def kind_of(qualname: str) -> Kind:
    """ "class", "function", "code" (see `runs_code`) or "unknown" for a dotted global name."""
    if runs_code(qualname):
        return "code"
    if len(qualname) > MAX_NAME or not all(p.isidentifier() for p in qualname.split(".")):
        return "unknown"
    module, _, name = qualname.rpartition(".")
    if not module or module == "__main__" or module.startswith("__main__."):
        return "unknown"
    loaded = sys.modules.get(module)
    if loaded is not None:
        return _kind_of_value(loaded, name)
    return _kind_in_source(module, name)


def _kind_of_value(module: object, name: str) -> Kind:
    sentinel = object()
    value = inspect.getattr_static(module, name, sentinel)
    if value is sentinel:
        return "unknown"
    if issubclass(type(value), type):
        return "class"
    return "function" if callable(value) else "unknown"


def _kind_in_source(module: str, name: str) -> Kind:
    return _top_level_kinds(module).get(name, "unknown")


@lru_cache(maxsize=256)
def _top_level_kinds(module: str) -> dict[str, Kind]:
    """What each top-level name of `module`'s source is (parsed once per module)."""
    path = _source_of(module)
    if path is None:
        return {}
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return {}
    kinds: dict[str, Kind] = {}
    for node in tree.body:  # the last top-level definition wins, as at import
        if isinstance(node, ast.ClassDef):
            kinds[node.name] = "class"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            kinds[node.name] = "function"
        else:
            for target in _assigned(node):
                kinds[target] = "unknown"
    return kinds


def _assigned(node: ast.stmt) -> list[str]:
    """Top-level names a statement binds other than by def/class (then their kind is
    unknown: `Stage = enum.Enum(...)`, an import, a conditional definition)."""
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(alias.asname or alias.name).split(".")[0] for alias in node.names]
    elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
        return [n.name for n in ast.walk(node) if isinstance(n, _DEFINITIONS)] + [
            t.id
            for n in ast.walk(node)
            if isinstance(n, ast.Assign)
            for t in n.targets
            if isinstance(t, ast.Name)
        ]
    else:
        return []
    return [t.id for t in targets if isinstance(t, ast.Name)]


_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _source_of(module: str) -> Path | None:
    """The .py file of `module`, found the way import would, without importing anything."""
    search: list[str] | None = None
    spec = None
    for part in module.split("."):
        spec = PathFinder.find_spec(part, search)
        if spec is None:
            return None
        search = list(spec.submodule_search_locations or [])
    origin = getattr(spec, "origin", None)
    if not origin or not origin.endswith(".py"):
        return None
    return Path(origin)


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
