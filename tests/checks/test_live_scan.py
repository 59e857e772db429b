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
    assert find_unsafe_objects(SAFE).objects == ()
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
    (found,) = find_unsafe_objects(state).objects
    assert found.path == "root['outer'][1]['inner']"
    assert found.fix.kind == kind
    assert advice in found.fix.advice


def test_numpy_objects_are_reported() -> None:
    np = pytest.importorskip("numpy")
    kinds = {
        f.path: f.fix.kind
        for f in find_unsafe_objects({"a": np.float32(1), "b": np.zeros(2)}).objects
    }
    assert kinds == {"root['a']": "numpy object", "root['b']": "numpy object"}


def test_int_subclasses_and_non_str_keys_are_checked() -> None:
    class Stage(enum.IntEnum):
        A = 0

    found = find_unsafe_objects({Stage.A: 1}).objects
    assert [f.path for f in found] == ["root.keys()"]


def test_deep_nesting_does_not_recurse() -> None:
    deep: list = []
    node = deep
    for _ in range(50_000):
        child: list = []
        node.append(child)
        node = child
    node.append(Color.RED)
    (found,) = find_unsafe_objects(deep).objects
    assert found.path.endswith("[0][0]")


def test_every_path_of_a_shared_object_is_named() -> None:
    """Fixing `.stage` alone leaves the same member inside the history tuple."""
    entered = datetime.datetime(2026, 1, 1)
    state = {"stage": Color.RED, "history": [(Color.RED, entered)], "entered": entered}
    assert [f.path for f in find_unsafe_objects(state).objects] == [
        "root['stage']",
        "root['history'][0][0]",
        "root['history'][0][1]",
        "root['entered']",
    ]


def test_a_shared_container_names_its_contents_at_each_path() -> None:
    shared = [Color.RED]
    found = find_unsafe_objects({"a": shared, "b": (shared, shared)}).objects
    assert [f.path for f in found] == ["root['a'][0]", "root['b'][0][0]", "root['b'][1][0]"]


def test_a_cycle_is_followed_once() -> None:
    loop: list = [Color.RED]
    loop.append(loop)
    point = Point(1)
    point.me = point  # type: ignore[attr-defined]
    found = find_unsafe_objects({"loop": loop, "point": point}).objects
    assert [f.path for f in found] == ["root['loop'][0]", "root['point']"]


def test_the_limit_is_never_silent() -> None:
    capped = find_unsafe_objects([Color.RED] * 200, limit=7)
    assert len(capped.objects) == 7 and not capped.complete
    whole = find_unsafe_objects([Color.RED] * 200)
    assert len(whole.objects) == 200 and whole.complete


@pytest.mark.parametrize("stage", ["GERMINATED", "BLENDING", "PROBATIONARY"])
def test_the_seed_slot_state_is_named_path_for_path_as_the_projects_walk_names_it(stage) -> None:
    from tests.support.seed_slot_state import SeedStage, checkpoint_at, offending_paths

    state = checkpoint_at(SeedStage[stage])
    found = [f.path for f in find_unsafe_objects(state).objects]
    assert found == offending_paths(state)
    assert len(found) == {"GERMINATED": 10, "BLENDING": 15, "PROBATIONARY": 17}[stage]


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
    found = {f.path: f.fix.kind for f in find_unsafe_objects({"seed": state}).objects}
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
    found = find_unsafe_objects({"net": torch.nn.Sequential(torch.nn.Linear(1, 1))}).objects
    assert [f.path for f in found] == ["root['net']"]
