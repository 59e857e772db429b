"""The suite's `python -m MODULE` processes (inner pytest runs, CLI calls), forked from a
process that imported torch once.

`pytester.runpytest_subprocess` starts `python -mpytest` once per run, and ~2 s of each run's ~3
went to importing torch; a CLI call is mostly that import. Here each such process is forked from
a server started once per worker (multiprocessing's forkserver: a fresh interpreter that imports
torch and pytest and nothing else, so none of the suite's state reaches a run, and pytest still
assert-rewrites the plugins a run loads through their entry points). The child gets what the
subprocess would have: the environment, the working directory, `sys.path` and `sys.argv` of
`python -m MODULE` there, its stdout and stderr files, no stdin (`test_forked_runs.py` compares
them). A process whose environment differs from the server's in what is read at interpreter or
torch start (ATEN_CPU_CAPABILITY, thread counts, PYTHON* settings) is a real subprocess.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
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


def _shares_start(env: dict[str, str]) -> bool:
    """May a process under `env` fork from the server (started here on first use)?"""
    _context()
    return _start_env(env) == _server["env"]


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
    if not (forkable and _shares_start(env)):
        return real_popen(cmdargs, stdout=stdout, stderr=stderr, stdin=stdin, **kw)
    return ForkedRun("pytest", args, os.getcwd(), env, stdout.name, stderr.name)


class ForkedRun:
    """What `pytester.run` uses of a `subprocess.Popen`: wait, kill, no stdin."""

    stdin = None

    def __init__(
        self, module: str, args: list[str], cwd: str, env: dict[str, str], out: str, err: str
    ) -> None:
        self.args = args
        rest = args[3:] if args[1] == "-m" else args[2:]
        self.process = _context().Process(
            target=_child, args=(module, rest, cwd, env, out, err, _server["path"])
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
    module: str,
    args: list[str],
    cwd: str,
    env: dict[str, str],
    out: str,
    err: str,
    fresh_path: list[str],
) -> None:
    """In the forked child: become `python -m MODULE ARGS` run in `cwd` under `env`."""
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
    sys.argv = [module, *args]  # run_module puts the module's file first, as -m does
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _text(fd: int, mode: str) -> Any:
    """A text stream on `fd` for the rest of the child's life (as the interpreter opens one)."""
    return open(fd, mode, encoding="utf-8", closefd=False)


def run_python(
    cmd: list[Any],
    *,
    capture_output: bool = False,
    text: bool = False,
    timeout: float | None = None,
    check: bool = False,
    cwd: Any = None,
    env: dict[str, str] | None = None,
    **rest: Any,
) -> subprocess.CompletedProcess:
    """`subprocess.run` for `[sys.executable, "-m", MODULE, ...]` with its output captured: a
    forked run (anything else, or a start-time environment the server lacks: a subprocess)."""
    args = [os.fsdecode(arg) if isinstance(arg, bytes) else os.fspath(arg) for arg in cmd]
    run_env = dict(os.environ if env is None else env)
    forkable = len(args) > 2 and args[:2] == [sys.executable, "-m"] and capture_output and not rest
    if not (forkable and _shares_start(run_env)):
        return subprocess.run(
            cmd, capture_output=capture_output, text=text, timeout=timeout, check=check,
            cwd=cwd, env=env, **rest,
        )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        out, err = os.path.join(folder, "out"), os.path.join(folder, "err")
        for name in (out, err):
            open(name, "wb").close()
        run = ForkedRun(args[2], args, os.fspath(cwd or os.getcwd()), run_env, out, err)
        try:
            code = run.wait(timeout)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
            raise
        with open(out, "rb") as handle:
            stdout = handle.read()
        with open(err, "rb") as handle:
            stderr = handle.read()
    if text:
        stdout, stderr = stdout.decode(), stderr.decode()
    result = subprocess.CompletedProcess(cmd, code, stdout, stderr)
    if check:
        result.check_returncode()
    return result
