"""The live and the rebuilt system are compared beyond their exports: container types and their
parameters, tensor dtype/device/requires_grad/class, module modes, buffer persistence."""

from __future__ import annotations

import collections
import time
from typing import Any

import pytest
import torch
from torch import nn

from pytest_ckpt.checks.live_structure import (
    MAX_DEPTH,
    describe_structure,
    structure_differences,
)


def differences(live: Any, rebuilt: Any) -> list[str]:
    return [
        str(d) for d in structure_differences(describe_structure(live), describe_structure(rebuilt))
    ]


def test_a_deque_that_lost_its_maxlen_is_named_with_both_values() -> None:
    entries = [(1, "a"), (2, "b")]
    live = {"history": collections.deque(entries, maxlen=100)}
    assert differences(live, {"history": collections.deque(entries)}) == [
        "system['history']: maxlen 100 != None"
    ]
    assert differences(live, {"history": collections.deque(entries, maxlen=100)}) == []


@pytest.mark.parametrize(
    ("live", "rebuilt", "expected"),
    [
        (
            collections.defaultdict(list),
            collections.defaultdict(int),
            "system.x: default_factory builtins.list != builtins.int",
        ),
        (collections.OrderedDict(a=1), {"a": 1}, "system.x: type collections.OrderedDict != dict"),
        ((1, 2), [1, 2], "system.x: type tuple != list"),
        (
            torch.zeros(2),
            torch.zeros(2, dtype=torch.float64),
            "system.x: dtype torch.float32 != torch.float64",
        ),
        (torch.zeros(2), torch.zeros(2, device="meta"), "system.x: device cpu != meta"),
        (
            torch.zeros(2, requires_grad=True),
            torch.zeros(2),
            "system.x: requires_grad True != False",
        ),
        (
            nn.Parameter(torch.zeros(2)),
            torch.zeros(2, requires_grad=True),
            "system.x: type torch.nn.parameter.Parameter != torch.Tensor",
        ),
        (1, 1.0, "system.x: type int != float"),
    ],
)
def test_each_kind_of_structural_difference_is_named(live, rebuilt, expected) -> None:
    class Holder:
        def __init__(self, x: Any) -> None:
            self.x = x

    assert differences(Holder(live), Holder(rebuilt)) == [expected]


class Net(nn.Module):
    def __init__(self, *, frozen: bool = True, persistent: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        self.head = nn.Linear(2, 1)
        self.head.weight.requires_grad_(not frozen)
        self.register_buffer("scale", torch.ones(1), persistent=persistent)


def test_a_submodule_kept_in_eval_mode_and_a_frozen_weight_and_buffer_persistence_are_compared():
    live = Net()
    live.body[1].eval()
    rebuilt = Net(frozen=False, persistent=True)
    assert differences(live, rebuilt) == [
        "system.scale: persistent False != True",
        "system.body.1: mode eval under a training parent != as its parent's",
        "system.head.weight: requires_grad False != True",
    ]


def test_the_top_modules_mode_is_the_steps_business() -> None:
    """A step's `model.train()` sets it: a rebuilt model starting in the other mode is fine."""
    assert differences(Net().eval(), Net()) == []


def test_values_and_places_only_one_side_has_are_not_compared() -> None:
    live = {"steps": 3, "weights": torch.ones(3), "cache": [1, 2, 3]}
    assert differences(live, {"steps": 4, "weights": torch.zeros(3)}) == []


def test_cycles_and_depth_are_bounded_and_big_tensors_are_not_copied() -> None:
    loop: list = []
    loop.append(loop)
    deep: list = []
    node = deep
    for _ in range(10_000):
        node.append([])
        node = node[0]
    big = torch.zeros(1).expand(2**40)  # 4 TiB as a view of one float: a copy would fail
    start = time.perf_counter()
    places = describe_structure({"loop": loop, "deep": deep, "big": big})
    assert time.perf_counter() - start < 1.0
    assert "system['loop']" in places and "system['loop'][0]" not in places
    assert max(path.count("[0]") for path in places) == MAX_DEPTH - 1
    assert places["system['big']"]["dtype"] == "torch.float32"
