from __future__ import annotations

import torch

from pytest_ckpt.snapshot import (
    describe_tensor,
    format_float,
    make_snapshot_extension,
    tensor_digest,
)


def test_tensor_lines_carry_shape_dtype_digest_and_summary() -> None:
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    line = describe_tensor(t, float_mode="exact")
    assert line == (
        f"Tensor(shape=[2, 3], dtype=float32, sha256={tensor_digest(t)}, "
        "mean=2.5, std=1.871, min=0, max=5)"
    )
    assert "sha256" not in describe_tensor(t, float_mode="rounded")


def test_integer_tensors_are_always_digested_and_small_ones_listed() -> None:
    line = describe_tensor(torch.tensor([3, 1, 2]), float_mode="rounded")
    assert "sha256=" in line and "values=[3, 1, 2]" in line
    assert "min=0, max=99" in describe_tensor(torch.arange(100), float_mode="exact")


def test_digest_is_of_exact_bytes() -> None:
    a = torch.tensor([1.0, 2.0])
    assert tensor_digest(a) == tensor_digest(a.clone())
    assert tensor_digest(a) != tensor_digest(a + 1e-7)
    assert tensor_digest(a[::1]) == tensor_digest(torch.tensor([1.0, 2.0, 3.0])[:2])
    assert tensor_digest(torch.zeros(0)) == tensor_digest(torch.zeros(0, 3))


def test_special_tensors_are_described_not_hashed() -> None:
    sparse = torch.eye(3).to_sparse()
    assert describe_tensor(sparse, float_mode="exact") == (
        "Tensor(shape=[3, 3], dtype=float32, layout=sparse_coo, not digested)"
    )
    meta = torch.empty(2, device="meta")
    assert "device=meta" in describe_tensor(meta, float_mode="exact")
    assert "non_finite=1" in describe_tensor(torch.tensor([1.0, float("nan")]), float_mode="exact")


def test_floats_are_rounded_but_whole_numbers_stay_exact() -> None:
    assert format_float(0.1234567891) == "0.123457"
    assert format_float(1700000017.0) == "1700000017.0"


def test_extension_uses_its_own_file_and_version() -> None:
    exact = make_snapshot_extension("exact")
    rounded = make_snapshot_extension("rounded")
    assert exact.file_extension == "ckpt-ambr"
    assert exact.serializer_class.VERSION != rounded.serializer_class.VERSION
    text = exact().serialize({"w": torch.ones(2), "rng": list(range(40)), "lr": 0.000300000001})
    assert "Tensor(shape=[2], dtype=float32" in text
    assert "list(len=40, shape=[40], dtype=float64, sha256=" in text
    assert "'lr': 0.0003," in text
