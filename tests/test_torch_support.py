from __future__ import annotations

import warnings

import pytest

from pytest_ckpt.torch_support import (
    TorchVersionWarning,
    check_torch,
    parse_torch_version,
    weights_only_advisory,
)


def test_versions_parse_with_local_and_pre_release_tails() -> None:
    assert parse_torch_version("2.13.0+cpu") == (2, 13)
    assert parse_torch_version("2.10.0a0+git1234") == (2, 10)
    with pytest.raises(ValueError):
        parse_torch_version("nightly")


@pytest.mark.parametrize("version", ["2.6.0", "2.9.1+cu121"])
def test_torch_below_2_10_is_warned_about(version: str) -> None:
    assert "CVE-2026-24747" in weights_only_advisory(version)
    with pytest.warns(TorchVersionWarning, match="older than 2.10"):
        check_torch(version)


@pytest.mark.parametrize("version", ["2.10.0", "2.13.0+cpu", "3.0.0"])
def test_torch_2_10_and_later_pass_quietly(version: str) -> None:
    assert weights_only_advisory(version) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_torch(version)


def test_torch_below_2_6_is_refused() -> None:
    with pytest.raises(RuntimeError, match="needs torch>=2.6"):
        check_torch("2.5.1")
