"""The suite's inner pytest runs, forked from a process that imported torch once.

`pytester.runpytest_subprocess` starts `python -mpytest` once per run, and ~2 s of each run's
~3 went to importing torch. Here each such run is forked instead from a server started once per
worker (multiprocessing's forkserver: a fresh interpreter that imports torch and pytest and
nothing else, so none of the suite's state reaches a run, and pytest still assert-rewrites the
plugins each run loads through their entry points). The child gets what the subprocess would
have: the environment (with the working directory on PYTHONPATH), the working directory,
`sys.path` and `sys.argv` of `python -m pytest` there, its stdout and stderr files, no stdin.
A run whose environment differs from the server's in what is read at interpreter or torch start
(ATEN_CPU_CAPABILITY, thread counts, PYTHON* settings) is a real subprocess.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from typing import Any

import pytest

# Read when the interpreter or torch starts: a run that sets one differently cannot share them.
_START_PREFIXES = ("ATEN_", "OMP_", "MKL_", "KMP_", "GOMP_", "TORCH", "PYTORCH", "CUDA", "PYTHON")
_READ_LATER = {"PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}

_server: dict[str, Any] = {}  # the context, the environment it started with, a fresh sys.path


def _start_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_START_PREFIXES) and k not in _READ_LATER}


def _context() -> Any:
    if not _server:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", "pytest"])
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        fresh = subprocess.run(
            [sys.executable, "-c", "import json, sys; print(json.dumps(sys.path[1:]))"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        _server.update(
            context=context, env=_start_env(dict(os.environ)), path=json.loads(fresh.stdout)
        )
    return _server["context"]


def forked_popen(
    pytester: pytest.Pytester, real_popen: Any, cmdargs: Any, stdout: Any, stderr: Any, **kw: Any
) -> Any:
    """`pytester.popen` for `python -mpytest ...` with files for its output: a forked run."""
    args = [os.fspath(arg) for arg in cmdargs]
    stdin = kw.pop("stdin", pytester.CLOSE_STDIN)
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH", "")]))
    forkable = (
        args[:2] == [sys.executable, "-mpytest"]
        and stdin is pytester.CLOSE_STDIN
        and not kw
        and hasattr(stdout, "name")
        and hasattr(stderr, "name")
    )
    if forkable:
        _context()
        forkable = _start_env(env) == _server["env"]
    if not forkable:
        return real_popen(cmdargs, stdout=stdout, stderr=stderr, stdin=stdin, **kw)
    return ForkedRun(args, os.getcwd(), env, stdout.name, stderr.name)


class ForkedRun:
    """What `pytester.run` uses of a `subprocess.Popen`: wait, kill, no stdin."""

    stdin = None

    def __init__(self, args: list[str], cwd: str, env: dict[str, str], out: str, err: str):
        self.args = args
        self.process = _context().Process(
            target=_child, args=(args[2:], cwd, env, out, err, _server["path"])
        )
        self.process.start()

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self.process.exitcode

    def kill(self) -> None:
        self.process.kill()


def _child(
    args: list[str], cwd: str, env: dict[str, str], out: str, err: str, fresh_path: list[str]
) -> None:
    """In the forked child: become `python -mpytest ARGS` run in `cwd` under `env`."""
    for fd, name, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, out, os.O_WRONLY),
        (2, err, os.O_WRONLY),
    ):
        opened = os.open(name, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = _text(0, "r")
    sys.stdout = sys.__stdout__ = _text(1, "w")
    sys.stderr = sys.__stderr__ = _text(2, "w")
    for name in [m for m in sys.modules if m == "tests" or m.startswith("tests.")]:
        del sys.modules[name]  # this module's package: the run may have its own `tests`
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
    path = [*env.get("PYTHONPATH", "").split(os.pathsep), *fresh_path]  # site dedupes these
    sys.path[:] = [cwd, *dict.fromkeys(os.path.abspath(p) for p in path if p)]  # then -m's cwd
    sys.argv = [os.path.join(os.path.dirname(pytest.__file__), "__main__.py"), *args]
    try:
        code = pytest.console_main()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


def _text(fd: int, mode: str) -> Any:
    """A text stream on `fd` for the rest of the child's life (as the interpreter opens one)."""
    return open(fd, mode, encoding="utf-8", closefd=False)
