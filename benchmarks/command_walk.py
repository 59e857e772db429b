"""Which pytest_ckpt files a command runs: the "walk of a command in files" that
CONTRIBUTING.md gives for each command, measured with a call tracer (`sys.setprofile`, also
set for threads). Not a test: figures go in closing notes and CONTRIBUTING.md.

    .venv/bin/python benchmarks/command_walk.py [--cwd DIR] [--list] -- pytest --ckpt-roundtrip ...
    .venv/bin/python benchmarks/command_walk.py -- pytest-ckpt audit FILE

The command runs in this process (`pytest.main` or `pytest_ckpt.cli.main`): its imports
are traced too, but module and class bodies are not counted: a file counts when one of
its functions ran. With --list, each file and how many of its functions ran. Subprocesses a command
starts (a world-size check's ranks) are not traced.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import threading
from collections import defaultdict
from pathlib import Path
from types import FrameType
from typing import Any

PACKAGE = str(Path(__file__).resolve().parents[1] / "pytest_ckpt") + os.sep
_IMPORT_TIME = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"})  # may run
# in a module body; inside a function they count with it


def trace(command: list[str]) -> tuple[int, dict[str, set[str]]]:
    """Run `command` (`pytest ...` or `pytest-ckpt ...`) under the tracer: its exit status,
    and the functions run per file (relative to the package)."""
    ran: dict[str, set[str]] = defaultdict(set)

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        if (
            code.co_filename.startswith(PACKAGE)
            and code.co_flags & inspect.CO_OPTIMIZED  # not a module or class body
            and code.co_name not in _IMPORT_TIME
        ):
            ran[code.co_filename[len(PACKAGE) :]].add(f"{code.co_name}:{code.co_firstlineno}")

    program, *args = command
    if program == "pytest":
        import pytest

        def run() -> int:
            return int(pytest.main(args))
    elif program == "pytest-ckpt":
        from pytest_ckpt.cli import main

        def run() -> int:
            return main(args)
    else:
        raise SystemExit(f"command_walk: {program!r}: expected pytest or pytest-ckpt")
    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        status = run()
    except SystemExit as err:
        status = err.code if isinstance(err.code, int) else 2
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    return status, ran


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cwd", help="run the command in this folder")
    parser.add_argument("--list", action="store_true", help="list the files")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not command:
        parser.error("give a command after --")
    if options.cwd:
        os.chdir(options.cwd)
    status, ran = trace(command)
    print(f"command: {' '.join(command)} (exit {status})")
    print(f"pytest_ckpt files whose functions ran: {len(ran)}")
    if options.list:
        for name in sorted(ran):
            print(f"  {name}: {len(ran[name])} function(s)")


if __name__ == "__main__":
    main()
