"""How migrate tests judge "faithful": what torch loads, described, in fresh processes.

`describe_files(paths, weights_only=...)` loads every file in ONE new torch process (with
`weights_only=False` only for files the tests wrote themselves from known-safe objects) and
returns a JSON description of each: types, values, dtypes, strides, conj/neg bits,
requires_grad, which tensors share a storage and which containers are the same object.
Objects the rules convert are described as what the rules make of them (an Enum member as
its value, a plain object as the dict of its attributes), so a migrated file must describe
exactly as its original.

`run_migrate(*args)` runs the `pytest-ckpt migrate` CLI in a subprocess from the repository
root (where the tests' own classes can be found); `run_migrations(argvs)` runs many in one
subprocess (one torch import for all: the CLI's own `main`, its output captured per run).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from tests.forked_runs import run_python

ROOT = pathlib.Path(__file__).resolve().parents[2]

DESCRIBE = r"""
import enum, json, sys, warnings
import torch
warnings.simplefilter("ignore")
sys.setrecursionlimit(20000)
weights_only = sys.argv[1] == "1"

def describe(value, ids, storages):
    if type(value) in (int, float, str, bool, type(None), bytes, complex):
        return [type(value).__name__, repr(value)]
    if isinstance(value, enum.Enum):
        return describe(value.value, ids, storages)
    if id(value) in ids:
        return ["same-as", ids[id(value)]]
    ids[id(value)] = len(ids)
    keep.append(value)
    if isinstance(value, torch.Tensor):
        key = value.untyped_storage().data_ptr()
        storages.setdefault(key, len(storages))
        flat = value.detach().resolve_conj().resolve_neg().flatten().tolist()
        return ["tensor", type(value).__name__, str(value.dtype), list(value.shape),
                list(value.stride()), value.storage_offset(), value.is_conj(),
                value.is_neg(), value.requires_grad, storages[key], repr(flat)]
    if isinstance(value, (torch.Size, torch.dtype, torch.device)):
        return [type(value).__name__, repr(value)]
    if isinstance(value, dict):
        return ["dict", type(value).__name__,
                [[describe(k, ids, storages), describe(v, ids, storages)]
                 for k, v in value.items()],
                [[k, describe(v, ids, storages)] for k, v in vars(value).items()]
                if hasattr(value, "__dict__") else []]
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, [describe(v, ids, storages) for v in value]]
    if hasattr(value, "__dict__") and not isinstance(value, torch.nn.Module):
        return describe(dict(vars(value)), ids, storages)  # an object: the dict of its state
    return ["object", type(value).__qualname__, repr(value)[:80]]

keep = []
out = {}
for path in sys.argv[2:]:
    loaded = torch.load(path, weights_only=weights_only)
    out[path] = describe(loaded, {}, {})
print(json.dumps(out))
"""


def describe_files(paths: list[pathlib.Path], *, weights_only: bool) -> dict[str, object]:
    """The description of each file as torch loads it, from one fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", DESCRIBE, "1" if weights_only else "0", *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def run_migrate(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_python(
        [sys.executable, "-m", "pytest_ckpt.cli", "migrate", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


MIGRATIONS = r"""
import contextlib, io, json, sys
from pytest_ckpt.cli import main
runs = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["migrate", *argv])
        except SystemExit as exit:
            code = exit.code
    runs.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(runs))
"""


def run_migrations(argvs: list[list[object]]) -> list[subprocess.CompletedProcess[str]]:
    """`pytest-ckpt migrate ARGV` for each of `argvs`, in order, in one subprocess."""
    result = subprocess.run(
        [sys.executable, "-c", MIGRATIONS, json.dumps([[str(a) for a in argv] for argv in argvs])],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=True,
    )
    return [
        subprocess.CompletedProcess(argv, run["returncode"], run["stdout"], run["stderr"])
        for argv, run in zip(argvs, json.loads(result.stdout), strict=True)
    ]


def refused_paths(stderr: str) -> list[str]:
    """The object paths of a refusal's lines (`  root['x']: reason`)."""
    return [line.strip().split(": ", 1)[0] for line in stderr.splitlines() if line[:2] == "  "]


def describe_pairs(pairs: list[tuple[pathlib.Path, pathlib.Path]]) -> dict[str, tuple]:
    """For each (original, migrated) pair: (the original as torch.load(weights_only=False)
    gives it: a file the test wrote itself; the migrated file as weights_only=True gives it),
    keyed by the original's name; one process per side."""
    originals = describe_files([source for source, _ in pairs], weights_only=False)
    migrated = describe_files([out for _, out in pairs], weights_only=True)
    return {source.name: (originals[str(source)], migrated[str(out)]) for source, out in pairs}
