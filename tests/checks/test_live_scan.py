from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import enum
import functools
import pathlib
import uuid

import pytest
import torch

from pytest_ckpt.checks.live_scan import find_unsafe_objects


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int


SAFE = {
    "ints": [1, 2**80, True, None, 1.5, complex(1, 2), b"x", "s"],
    "torch": [torch.zeros(2), torch.nn.Parameter(torch.ones(1)), torch.float16, torch.Size([2])],
    "containers": collections.OrderedDict(a={1, 2}, b=collections.Counter("aab")),
    "device": torch.device("cpu"),
    "rng": torch.get_rng_state(),
}


def test_what_weights_only_accepts_is_not_reported() -> None:
    assert find_unsafe_objects(SAFE) == []
    torch.save(SAFE, buffer := __import__("io").BytesIO())
    buffer.seek(0)
    torch.load(buffer, weights_only=True)  # and torch agrees


@pytest.mark.parametrize(
    ("value", "kind", "advice"),
    [
        (Color.RED, "Enum", "store .value"),
        (Point(1), "dataclass", "to_dict()"),
        (datetime.datetime(2026, 1, 1), "datetime", "ISO string"),
        (collections.deque([1]), "deque", "list(d)"),
        (collections.defaultdict(list), "defaultdict", "dict(d)"),
        (torch.nn.Linear(1, 1), "nn.Module", "state_dict()"),
        (argparse.Namespace(a=1), "argparse.Namespace", "vars(namespace)"),
        (pathlib.PurePosixPath("/x"), "path", "str(path)"),
        (uuid.UUID(int=1), "UUID", "str(uuid)"),
        (functools.partial(print), "callable", "callable's name"),
        (torch.Generator(), "torch.Generator", "get_state()"),
        (frozenset({1}), "frozenset", "sorted"),
    ],
)
def test_unsafe_objects_are_reported_at_their_path_with_a_fix(value, kind, advice) -> None:
    state = {"outer": [0, {"inner": value}]}
    (found,) = find_unsafe_objects(state)
    assert found.path == "root['outer'][1]['inner']"
    assert found.fix.kind == kind
    assert advice in found.fix.advice


def test_numpy_objects_are_reported() -> None:
    np = pytest.importorskip("numpy")
    kinds = {
        f.path: f.fix.kind for f in find_unsafe_objects({"a": np.float32(1), "b": np.zeros(2)})
    }
    assert kinds == {"root['a']": "numpy object", "root['b']": "numpy object"}


def test_int_subclasses_and_non_str_keys_are_checked() -> None:
    class Stage(enum.IntEnum):
        A = 0

    found = find_unsafe_objects({Stage.A: 1})
    assert [f.path for f in found] == ["root.keys()"]


def test_deep_nesting_does_not_recurse() -> None:
    deep: list = []
    node = deep
    for _ in range(50_000):
        child: list = []
        node.append(child)
        node = child
    node.append(Color.RED)
    (found,) = find_unsafe_objects(deep)
    assert found.path.endswith("[0][0]")


def test_limit_caps_the_findings() -> None:
    assert len(find_unsafe_objects([Color.RED] * 200, limit=7)) == 1  # one object, seen once
    assert len(find_unsafe_objects([Point(i) for i in range(200)], limit=7)) == 7


@dataclasses.dataclass
class SeedState:
    stage: Color
    entered: datetime.datetime
    history: collections.deque
    metrics: Point


def test_objects_inside_a_refused_object_whose_fix_keeps_them_are_reported_too() -> None:
    class Shade(enum.Enum):
        DARK = 1

    state = SeedState(
        Color.RED, datetime.datetime(2026, 1, 1), collections.deque([Shade.DARK]), Point(1)
    )
    found = {f.path: f.fix.kind for f in find_unsafe_objects({"seed": state})}
    assert found == {
        "root['seed']": "dataclass",
        "root['seed'].stage": "Enum",
        "root['seed'].entered": "datetime",
        "root['seed'].history": "deque",
        "root['seed'].history[0]": "Enum",
        "root['seed'].metrics": "dataclass",
    }


def test_what_a_whole_replacement_fixes_is_not_searched() -> None:
    """A module is replaced by its state_dict: its submodules are no separate findings."""
    found = find_unsafe_objects({"net": torch.nn.Sequential(torch.nn.Linear(1, 1))})
    assert [f.path for f in found] == ["root['net']"]
