"""Checkpoints of real objects (torch.save) and hand-written pickles of code-running calls
(never executed), for the tests that apply the auditor's advice against torch.

Importable, so that torch in a subprocess can resolve `tests.audit.advice_fixtures.Stage`
when a test allow-lists it."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import enum
import functools
import pathlib
import struct
from collections.abc import Callable
from typing import Any

import torch

from tests.audit.test_hostile import PROTO2, global_op, write_zip


class Stage(enum.Enum):
    BLENDING = 3


@dataclasses.dataclass
class Record:
    alpha: float


class LearningRate(float):
    """A project's float subclass, as found in param_groups['lr']."""


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(2, 1)


def _optimizer_with_float_subclass() -> dict[str, Any]:
    net = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    state = optimizer.state_dict()
    state["param_groups"][0]["lr"] = LearningRate(0.1)
    return {"optimizer": state}


def real_objects() -> dict[str, Callable[[], Any]]:
    """File stem -> what is saved (a state holding one kind of object torch refuses)."""
    import numpy as np

    stage = Stage.BLENDING
    path = pathlib.PosixPath("/runs/a")
    return {
        "numpy_array": lambda: {"a": np.arange(3, dtype=np.uint32)},
        "numpy_float64": lambda: {"x": np.float64(1.5)},
        "numpy_float32": lambda: {"x": np.float32(1.5)},
        "numpy_legacy_rng": lambda: {"rng": np.random.RandomState(0).get_state()},
        "numpy_generator": lambda: {"rng": np.random.default_rng(0)},
        "enum": lambda: {"stage": stage},
        "enum_value_and_key": lambda: {"stage": stage, "by_stage": {stage: 1}},
        "sets": lambda: {"s": {stage}, "f": frozenset({stage})},
        "path": lambda: {"dir": pathlib.PosixPath("/runs/a")},
        "path_twice": lambda: {"dir": path, "dirs": [path]},
        "dataclass": lambda: {"record": Record(0.5)},
        "module": lambda: {"net": TinyNet()},
        "float_subclass_lr": _optimizer_with_float_subclass,
        "defaultdict": lambda: {"d": collections.defaultdict(list, a=[1])},
        "empty_defaultdict": lambda: {"d": collections.defaultdict(dict)},
        "deque": lambda: {"q": collections.deque([1, 2], maxlen=3)},
        "partial": lambda: {"f": functools.partial(max, 1)},
        "function": lambda: {"act": torch.nn.functional.relu},
        "datetime": lambda: {"when": datetime.datetime(2026, 1, 1)},
        "namespace": lambda: {"args": argparse.Namespace(lr=0.1)},
    }


def save_real_objects(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    files = {}
    for stem, make in real_objects().items():
        torch.save(make(), files.setdefault(stem, folder / f"{stem}.pt"))
    return files


# Globals that, called with one string, look like an Enum member built from its value.
CODE_RUNNING = (
    ("timeit", "timeit"),
    ("pdb", "run"),
    ("cProfile", "run"),
    ("torch", "load"),
    ("torch.hub", "load"),
    ("torch.utils.cpp_extension", "load_inline"),
    ("builtins", "breakpoint"),
    ("shelve", "open"),
    ("torch.ops", "load_library"),
    ("runpy", "run_path"),
    ("zipfile", "ZipFile"),  # classes too: constructing one opens or writes a file
    ("subprocess", "Popen"),
)


def code_running_pickle(module: str, name: str, argument: str) -> bytes:
    """{'stage': module.name(argument)}: one REDUCE of a code-running global."""
    text = argument.encode()
    return (
        PROTO2
        + b"}"  # EMPTY_DICT
        + b"X\x05\x00\x00\x00stage"
        + global_op(module, name)
        + b"X"
        + struct.pack("<I", len(text))
        + text
        + b"\x85R"  # TUPLE1 REDUCE
        + b"s."  # SETITEM STOP
    )


def save_code_running(folder: pathlib.Path, marker: pathlib.Path) -> dict[str, pathlib.Path]:
    """One file per code-running global; each would create `marker` if its code ran."""
    files = {}
    for module, name in CODE_RUNNING:
        argument = f"open({str(marker)!r}, 'w')"
        path = folder / f"code-{module}-{name}.pt"
        files[f"{module}.{name}"] = write_zip(path, code_running_pickle(module, name, argument))
    return files
