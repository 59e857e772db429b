"""A corpus of checkpoints the audit tests generate themselves: clean ones torch loads, and
unsafe ones with one object torch refuses planted at a known path."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import enum
import pathlib
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


class Stage(enum.Enum):
    BLENDING = 3


@dataclasses.dataclass(slots=True)
class SeedRecord:
    stage: str
    alpha: float


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], Any]
    path: str | None = None  # where the planted object is; None for clean cases
    global_name: str | None = None


def _model_state() -> dict[str, Any]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 2)
    scaler = torch.amp.GradScaler("cpu")
    return {
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "generator": torch.Generator().manual_seed(1).get_state(),
        },
        "misc": {
            "set": {1, 2},
            "bytes": b"\x00\x01",
            "complex": 1 + 2j,
            "big": 2**100,
            "od": collections.OrderedDict(a=1),
            "counter": collections.Counter("aab"),
            "dtype": torch.float16,
            "device": torch.device("cpu"),
            "size": torch.Size([2]),
        },
    }


def _planted(value_factory: Callable[[], Any]) -> Callable[[], Any]:
    def make() -> dict[str, Any]:
        state = _model_state()
        state["model"]["seed_slots.r0c1._extra_state"] = {"seed_state": value_factory()}
        return state

    return make


PLANT_PATH = "root['model']['seed_slots.r0c1._extra_state']['seed_state']"

CLEAN = [
    Case("model_state", _model_state),
    Case("tensor_views", lambda: {"w": (base := torch.arange(12.0)), "view": base[2:8:2]}),
    Case("empty_and_scalar", lambda: {"e": torch.zeros(0, 3), "s": torch.tensor(1.5)}),
    Case(
        "int_dtypes",
        lambda: [torch.arange(3).to(d) for d in (torch.int8, torch.uint8, torch.bool, torch.int64)],
    ),
    Case("parameter", lambda: {"p": torch.nn.Parameter(torch.ones(2))}),
]

UNSAFE = [
    Case("enum", _planted(lambda: Stage.BLENDING), PLANT_PATH, "tests.audit.corpus.Stage"),
    Case(
        "dataclass",
        _planted(lambda: SeedRecord("BLENDING", 0.5)),
        PLANT_PATH,
        "tests.audit.corpus.SeedRecord",
    ),
    Case(
        "datetime", _planted(lambda: datetime.datetime(2026, 1, 1)), PLANT_PATH, "datetime.datetime"
    ),
    Case(
        "deque",
        _planted(lambda: collections.deque([1, 2], maxlen=3)),
        PLANT_PATH,
        "collections.deque",
    ),
    Case(
        "defaultdict",
        _planted(lambda: collections.defaultdict(list)),
        PLANT_PATH,
        "collections.defaultdict",
    ),
    Case(
        "module",
        _planted(lambda: torch.nn.Linear(1, 1)),
        PLANT_PATH,
        "torch.nn.modules.linear.Linear",
    ),
    Case(
        "namespace", _planted(lambda: argparse.Namespace(lr=0.1)), PLANT_PATH, "argparse.Namespace"
    ),
    Case(
        "path",
        _planted(lambda: pathlib.PurePosixPath("/tmp/x")),
        PLANT_PATH,
        "pathlib.PurePosixPath",
    ),
    Case("uuid", _planted(lambda: uuid.UUID(int=7)), PLANT_PATH, "uuid.UUID"),
    Case("frozenset", _planted(lambda: frozenset({1})), PLANT_PATH, "builtins.frozenset"),
    Case(
        "timedelta",
        _planted(lambda: datetime.timedelta(seconds=3)),
        PLANT_PATH,
        "datetime.timedelta",
    ),
]


def numpy_cases() -> list[Case]:
    import numpy as np

    return [
        Case("numpy_scalar", _planted(lambda: np.float32(1.5)), PLANT_PATH, None),
        Case("numpy_array", _planted(lambda: np.zeros(3)), PLANT_PATH, None),
    ]


def write_corpus(folder: pathlib.Path) -> dict[str, Case]:
    """Save every case; returns file name -> case."""
    cases = {}
    for case in [*CLEAN, *UNSAFE, *numpy_cases()]:
        torch.save(case.make(), folder / f"{case.name}.pt")
        cases[f"{case.name}.pt"] = case
    for case in (CLEAN[0], UNSAFE[0]):
        name = f"{case.name}-legacy.pt"
        torch.save(case.make(), folder / name, _use_new_zipfile_serialization=False)
        cases[name] = case
    return cases
