"""Tolerant snapshot comparison: what another CPU changes passes, what a person changed fails."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings

from pytest_ckpt import strategies as cst
from pytest_ckpt.plugin.report import strip_ansi
from pytest_ckpt.plugin.snapshot import make_snapshot_extension
from pytest_ckpt.plugin.snapshot_compare import (
    Tolerance,
    ToleranceRule,
    Tolerances,
    compare_snapshots,
    parse_snapshot,
)

DEFAULT = Tolerances(Tolerance(rtol=1e-3, atol=1e-6))


def test_paths_follow_keys_indices_and_one_line_containers() -> None:
    text = """dict({
  'state': dict({
    0: dict({'lr': 0.5, 'betas': tuple(0.9, 0.99)}),
    'w': Tensor(shape=[20], dtype=float32, norm=1.5, absmax=0.5),
  }),
  'events': list([
    dict({'event': 'a', 'payload': dict({'loss': 2.5})}),
  ]),
})"""
    paths = [p for line in parse_snapshot(text) for p in line.float_paths]
    assert paths == [
        "state.0.lr", "state.0.betas.0", "state.0.betas.1", "state.w", "state.w",
        "events.0.payload.loss",
    ]  # fmt: skip


def record() -> dict[str, Any]:
    """A realistic snapshot record: a model and Adam after two steps, stages, telemetry."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
    return {
        "state": {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "stages": {"r0c0": "BLENDING", "r0c1": "TRAINING"},
            "epochs": 7,
        },
        "step": {
            "metrics": {"loss": 0.4321},
            "telemetry": [
                {"event_type": "SEED_STAGE_CHANGED", "seq": 1, "payload": {"to": "BLENDING"}},
                {"event_type": "EPOCH_COMPLETED", "seq": 2, "payload": {"loss": 0.4}},
            ],
        },
    }


def matches(before: Any, after: Any, **kwargs: Any) -> bool:
    extension = make_snapshot_extension(**kwargs)()
    return extension.matches(
        serialized_data=extension.serialize(after), snapshot_data=extension.serialize(before)
    )


def perturbed(value: Any, relative: float) -> Any:
    """`value` as another CPU's kernels might give it back: every float moved by `relative`."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            return value
        moved = value.double() * (1 + relative)
        return torch.where(moved.isfinite(), moved, value.double()).to(value.dtype)
    if isinstance(value, float):
        moved = value * (1 + relative)
        return moved if math.isfinite(moved) else value
    if isinstance(value, dict):
        return type(value)((k, perturbed(v, relative)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(perturbed(v, relative) for v in value)
    return value


def test_what_another_cpu_changes_passes() -> None:
    assert matches(record(), perturbed(record(), 2e-4))


def test_a_near_zero_value_that_changes_sign_passes_within_atol() -> None:
    before, after = record(), record()
    before["step"]["metrics"]["loss"], after["step"]["metrics"]["loss"] = 3e-8, -3e-8
    assert matches(before, after)


def mutations() -> dict[str, Any]:
    def scale(r):
        r["state"]["model"]["0.weight"] = r["state"]["model"]["0.weight"] * 1.01

    def integer(r):
        r["state"]["epochs"] = 8

    def rename(r):
        r["state"]["model"]["0.weight_renamed"] = r["state"]["model"].pop("0.weight")

    def stage(r):
        r["state"]["stages"]["r0c0"] = "PROBATIONARY"

    def reorder(r):
        r["step"]["telemetry"].reverse()

    def adam_step(r):
        r["state"]["optimizer"]["state"][0]["step"] = torch.tensor(3.0)

    return {f.__name__: f for f in (scale, integer, rename, stage, reorder, adam_step)}


@pytest.mark.parametrize("mutation", mutations())
def test_a_real_change_still_fails(mutation: str) -> None:
    after = record()
    mutations()[mutation](after)
    assert not matches(record(), after)


def test_the_diff_names_each_float_beyond_tolerance_with_both_values() -> None:
    extension = make_snapshot_extension()()
    before, after = record(), perturbed(record(), 2e-4)
    after["state"]["model"]["0.weight"] = after["state"]["model"]["0.weight"] * 1.01
    lines = extension.diff_lines(extension.serialize(after), extension.serialize(before))
    diff = [strip_ansi(line) for line in lines]
    beyond = [line for line in diff if line.startswith("float beyond tolerance")]
    assert len(beyond) == 2  # norm and absmax of the one scaled tensor
    assert "state.model.0.weight: snapshot " in beyond[0] and "allowed rtol=0.001" in beyond[0]
    changed = [line for line in diff[2:] if line.lstrip().startswith(("-", "+"))]
    assert len(changed) == 2 and all("'0.weight'" in line for line in changed)


def test_rules_override_the_default_first_match_wins() -> None:
    rules = [
        ToleranceRule.parse("step.metrics.loss: rtol=0.5"),
        ToleranceRule.parse("step.*: unchecked"),
    ]
    before, after = record(), record()
    after["step"]["metrics"]["loss"] *= 1.3
    after["step"]["telemetry"][1]["payload"]["loss"] = 9.0
    assert not matches(before, after)
    assert matches(before, after, rules=rules)
    after["step"]["metrics"]["loss"] *= 2
    assert not matches(before, after, rules=rules)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no colon", "expected 'PATTERN: rtol=X"),
        ("a.b: rtol=", "rtol must be a number"),
        ("a.b: rtol=-1", "finite number >= 0"),
        ("a.b: tol=1", "expected rtol=X and/or atol=Y"),
        ("a.b: rtol=1, rtol=2", "expected rtol=X and/or atol=Y"),
    ],
)
def test_bad_rules_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ToleranceRule.parse(text)


def test_a_rule_without_atol_keeps_the_default_atol() -> None:
    rule = ToleranceRule.parse("x: rtol=0.1").with_defaults(Tolerance(1e-3, 1e-6))
    assert rule.tolerance == Tolerance(0.1, 1e-6)


def test_structure_or_exact_text_that_differs_never_matches() -> None:
    snapshot = "dict({\n  'a': 1.5,\n  'b': 'x',\n})"
    assert compare_snapshots(snapshot, snapshot.replace("1.5", "1.5001"), DEFAULT).matches
    assert not compare_snapshots(snapshot, snapshot.replace("'x'", "'y'"), DEFAULT).matches
    assert not compare_snapshots(snapshot, snapshot.replace("1.5", "2"), DEFAULT).matches
    assert not compare_snapshots(snapshot, snapshot.replace("1.5", "nan"), DEFAULT).matches
    numbers_in_strings = "dict({\n  'a': 'lr 0.5',\n})"
    other = numbers_in_strings.replace("0.5", "0.50001")
    assert not compare_snapshots(numbers_in_strings, other, DEFAULT).matches


@settings(max_examples=60, deadline=None)
@given(cst.checkpoint_payloads())
def test_any_payload_matches_itself_moved_by_kernel_noise(payload: Any) -> None:
    assert matches(payload, perturbed(payload, 1e-6))
    assert matches(payload, copy.deepcopy(payload), float_mode="exact")


@pytest.mark.parametrize(
    "payload",
    [
        {"": [], "\n": [1.0, ""]},  # hypothesis found it: the float after a multi-line key
        {"a\nb": {"x": 0.5, "y\nz": [2.5, 3.5]}, "c": 1.5},
        {"k": ["a\nb", 1.5, "c\nd", 2.5]},  # multi-line values: the items after keep places
    ],
)
def test_floats_after_a_multi_line_string_are_compared_as_floats(payload) -> None:
    assert matches(payload, perturbed(payload, 1e-6))
    assert not matches(payload, perturbed(payload, 1e-2))
