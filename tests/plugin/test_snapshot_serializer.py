from __future__ import annotations

import numpy as np
import torch

from pytest_ckpt.plugin.snapshot import make_snapshot_extension, snapshot_dirname_for
from pytest_ckpt.plugin.snapshot_compare import ToleranceRule
from pytest_ckpt.plugin.snapshot_text import (
    describe_number_list,
    describe_tensor,
    format_float,
    tensor_digest,
)


def test_float_tensors_carry_well_conditioned_summaries_not_a_mean() -> None:
    t = torch.zeros(3, 4)
    t[0, 0], t[2, 3] = 3.0, -4.0
    assert describe_tensor(t) == "Tensor(shape=[3, 4], dtype=float32, norm=5.0, absmax=4.0)"
    exact = describe_tensor(t, float_mode="exact")
    assert f"sha256='{tensor_digest(t)}'" in exact and "norm=5.0" in exact


def test_small_tensors_list_their_values_and_integer_tensors_are_digested() -> None:
    assert describe_tensor(torch.tensor(16.0)) == "Tensor(shape=[], dtype=float32, values=[16.0])"
    line = describe_tensor(torch.tensor([3, 1, 2]))
    assert f"sha256='{tensor_digest(torch.tensor([3, 1, 2]))}'" in line
    assert line.endswith("values=[3, 1, 2])")
    assert "min=0, max=99" in describe_tensor(torch.arange(100))


def test_unchecked_tensors_keep_shape_and_dtype_only() -> None:
    assert describe_tensor(torch.ones(20), checked=False) == "Tensor(shape=[20], dtype=float32)"
    assert describe_tensor(torch.arange(20), checked=False) == "Tensor(shape=[20], dtype=int64)"
    assert "sha256" in describe_tensor(torch.arange(20))


def test_digest_is_of_exact_bytes() -> None:
    a = torch.tensor([1.0, 2.0])
    assert tensor_digest(a) == tensor_digest(a.clone())
    assert tensor_digest(a) != tensor_digest(a + 1e-7)
    assert tensor_digest(a[::1]) == tensor_digest(torch.tensor([1.0, 2.0, 3.0])[:2])
    assert tensor_digest(torch.zeros(0)) == tensor_digest(torch.zeros(0, 3))


def test_special_tensors_are_described_not_hashed() -> None:
    sparse = torch.eye(3).to_sparse()
    assert describe_tensor(sparse) == (
        "Tensor(shape=[3, 3], dtype=float32, layout=sparse_coo, not digested)"
    )
    meta = torch.empty(2, device="meta")
    assert "device=meta" in describe_tensor(meta)
    line = describe_tensor(torch.tensor([1.0, float("nan")] * 5))
    assert "nonfinite=5" in line and "absmax=1.0" in line


def test_floats_always_read_as_floats_and_whole_numbers_stay_exact() -> None:
    assert format_float(0.1234567891) == "0.12345679"
    assert format_float(1700000017.0) == "1700000017.0"
    assert format_float(16.0) == "16.0"
    assert format_float(1e20) == "1e+20"
    assert format_float(0.1 + 0.2, float_mode="exact") == "0.30000000000000004"


def test_long_int_lists_beyond_2_53_that_differ_get_different_lines() -> None:
    big = [2**53 + i for i in range(20)]
    other = [*big[:-1], big[-1] + 1]
    assert float(big[-1]) == float(other[-1])  # as floats they would be one value
    assert describe_number_list(big) != describe_number_list(other)
    assert describe_number_list([2**64] * 20) != describe_number_list([2**64 + 1] * 20)


def test_long_float_lists_are_summarised_like_tensors() -> None:
    line = describe_number_list([0.5] * 20)
    assert line.startswith("list(len=20, shape=[20], dtype=float64, norm=")


def serialize(data, **kwargs) -> str:
    return make_snapshot_extension(**kwargs)().serialize(data)


def test_numpy_scalars_and_float_subclasses_are_rounded_like_floats() -> None:
    class LearningRate(float):
        pass

    text = serialize({"a": np.float32(0.1), "b": np.float64(1 / 3), "c": LearningRate(2 / 3)})
    assert "'a': float32(0.1)," in text  # not 0.10000000149011612
    assert "'b': float64(0.33333333)," in text
    assert "'c': LearningRate(0.66666667)," in text
    assert "'n': int64(7)," in serialize({"n": np.int64(7)})


def test_short_containers_of_primitives_take_one_line() -> None:
    state = {"betas": (0.9, 0.999), "ids": [0, 1, 2], "m": {"a": 1, "b": None}}
    text = serialize({**state, "w": torch.ones(2)})
    assert "'betas': tuple(0.9, 0.999)," in text
    assert "'ids': list([0, 1, 2])," in text
    assert "'m': dict({'a': 1, 'b': None})," in text


def test_unchecked_paths_pin_the_type_of_a_float_not_its_value() -> None:
    rules = [ToleranceRule.parse("step.*.reward: unchecked"), ToleranceRule.parse("w: unchecked")]
    data = {"step": {"p": {"reward": 0.123, "kind": "x"}}, "w": torch.ones(20), "lr": 0.5}
    text = serialize(data, rules=rules)
    assert "'step': dict({'p': dict({'kind': 'x', 'reward': <float>})})," in text
    assert "'w': Tensor(shape=[20], dtype=float32)," in text
    assert "'lr': 0.5," in text


def test_extension_uses_its_own_file_and_version() -> None:
    exact = make_snapshot_extension("exact")
    tolerant = make_snapshot_extension("tolerant")
    assert exact.file_extension == "ckpt-ambr"
    assert exact.serializer_class.VERSION != tolerant.serializer_class.VERSION
    text = tolerant().serialize({"w": torch.ones(2), "rng": list(range(40)), "lr": 0.000300000001})
    assert "'w': Tensor(shape=[2], dtype=float32, values=[1.0, 1.0])," in text
    assert "'rng': list(len=40, sha256=" in text
    assert "'lr': 0.0003," in text


def test_each_subject_gets_its_own_snapshot_folder() -> None:
    assert snapshot_dirname_for("reference-cnn") == "__ckpt_snapshots__/reference-cnn"
    assert snapshot_dirname_for("../evil name") == "__ckpt_snapshots__/___evil_name"
    assert snapshot_dirname_for("..") == "__ckpt_snapshots__/__"
    extension = make_snapshot_extension(dirname=snapshot_dirname_for("a"))
    assert extension.snapshot_dirname == "__ckpt_snapshots__/a"
