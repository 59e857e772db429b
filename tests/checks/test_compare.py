from __future__ import annotations

import collections
import math

import torch

from pytest_ckpt.checks.compare import diff_values, tensors_equal


def test_equal_nested_state_has_no_differences() -> None:
    state = {"a": [1, 2.5, None], "t": torch.arange(4), "od": collections.OrderedDict(x=(1, "s"))}
    same = {"a": [1, 2.5, None], "t": torch.arange(4), "od": collections.OrderedDict(x=(1, "s"))}
    assert diff_values(state, same) == []


def test_differences_carry_paths_and_details() -> None:
    expected = {"w": torch.zeros(2, 2), "n": 1, "l": [1, 2], "k": {"x": 1}, "d": torch.zeros(2)}
    actual = {"w": torch.ones(2, 2), "n": 1.0, "l": [1, 2, 3], "k": {"y": 1}, "d": torch.zeros(3)}
    text = [str(d) for d in diff_values(expected, actual)]
    assert "root['w']: 4 of 4 elements differ (max abs diff 1)" in text
    assert "root['n']: int 1 != float 1.0" in text
    assert "root['l']: length 2 != 3" in text
    assert "root['k']: keys missing after: ['x']" in text
    assert "root['k']: unexpected keys: ['y']" in text
    assert "root['d']: shape [2] != [3]" in text


def test_dtype_and_list_tuple_changes_are_differences() -> None:
    assert str(diff_values(torch.zeros(1), torch.zeros(1, dtype=torch.float64))[0]).endswith(
        "dtype torch.float32 != torch.float64"
    )
    assert diff_values([1], (1,))[0].detail == "list != tuple"


def test_nan_in_the_same_place_is_a_faithful_restore() -> None:
    a = torch.tensor([1.0, math.nan])
    assert tensors_equal(a, a.clone())
    assert not tensors_equal(a, torch.tensor([math.nan, 1.0]))
    assert diff_values({"x": math.nan}, {"x": math.nan}) == []


def test_limit_bounds_the_report() -> None:
    assert len(diff_values(list(range(100)), list(range(1, 101)), limit=5)) == 5


def test_refusals_the_live_scan_cannot_see_are_explained_by_the_auditor(tmp_path) -> None:
    import datetime

    import pytest

    from pytest_ckpt.checks.roundtrip import save_and_load
    from pytest_ckpt.errors import CheckpointLoadError

    tensor = torch.zeros(2)
    tensor.note = datetime.date(2026, 1, 1)  # a plain Tensor to the eye; pickled with its state
    with pytest.raises(CheckpointLoadError, match=r"root\['w'\].*datetime.date. Fix: store an ISO"):
        save_and_load({"w": tensor}, tmp_path / "x.pt")


def test_long_strings_show_where_they_differ_not_a_shared_prefix() -> None:
    prefix = "seed r0c1 trained for 12 epochs then blended with a gated schedule; " * 2
    (difference,) = diff_values(prefix + "alpha=0.50", prefix + "alpha=0.75")
    assert difference.detail.startswith(f"differ from index {len(prefix) + 8} (lengths")
    assert "alpha=0.50" in difference.detail and "alpha=0.75" in difference.detail
    (short,) = diff_values("abc", "abd")
    assert short.detail == "'abc' != 'abd'"
