from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from pytest_ckpt import torch_support
from pytest_ckpt.torch_support import (
    TorchVersionWarning,
    check_torch,
    parse_torch_version,
    reviewed_torch_versions,
    shown,
    unreviewed_advisory,
    weights_only_advisory,
)

NEWEST = reviewed_torch_versions()[-1]
NEWER = f"{NEWEST[0]}.{NEWEST[1] + 1}.0"


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Advisories are given once per process: each test starts as a new process would."""
    monkeypatch.setattr(torch_support, "_ANNOUNCED", set())


def test_versions_parse_with_local_and_pre_release_tails() -> None:
    assert parse_torch_version("2.13.0+cpu") == (2, 13)
    assert parse_torch_version("2.10.0a0+git1234") == (2, 10)
    with pytest.raises(ValueError):
        parse_torch_version("nightly")


@pytest.mark.parametrize("version", ["2.6.0", "2.9.1+cu121"])
def test_torch_below_2_10_is_warned_about(version: str) -> None:
    assert "CVE-2026-24747" in weights_only_advisory(version)
    with pytest.warns(TorchVersionWarning, match="older than 2.10") as caught:
        check_torch(version)
    assert len(caught) == 1, "one warning: the CVE one says a pass proves nothing"


@pytest.mark.parametrize("version", [f"{shown(v)}.0" for v in reviewed_torch_versions()])
def test_reviewed_torch_versions_pass_quietly(version: str) -> None:
    assert weights_only_advisory(version) is None
    assert unreviewed_advisory(version) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_torch(version)


@pytest.mark.parametrize("version", [NEWER, "3.0.0"])
def test_torch_newer_than_the_last_review_is_warned_about_once(version: str) -> None:
    with pytest.warns(TorchVersionWarning, match="newer than the last torch") as caught:
        check_torch(version)
        check_torch(version)
    assert len(caught) == 1
    assert f"({shown(NEWEST)})" in str(caught[0].message)
    assert f"torch<={shown(NEWEST)}" in str(caught[0].message)


def test_torch_between_reviews_is_warned_about() -> None:
    reviewed = reviewed_torch_versions()
    gaps = [(2, m) for m in range(10, NEWEST[1]) if (2, m) not in reviewed]
    if not gaps:
        pytest.skip("every minor version from 2.10 on is reviewed")
    with pytest.warns(TorchVersionWarning, match="not among the torch versions"):
        check_torch(f"{shown(gaps[0])}.0")


def test_torch_below_2_6_is_refused() -> None:
    with pytest.raises(RuntimeError, match="needs torch>=2.6"):
        check_torch("2.5.1")


def test_auditing_on_an_unreviewed_torch_warns_once_in_one_line(tmp_path) -> None:
    """The CLI (and any caller of the auditor) on a torch newer than the last review: one
    warning, however many files; the verdicts still come."""
    import torch

    for i in range(2):
        torch.save({"w": torch.zeros(2)}, tmp_path / f"m{i}.pt")
    script = (
        "import sys, torch; torch.__version__ = sys.argv[1]; "
        "from pytest_ckpt.cli import main; "
        "raise SystemExit(main(['audit', sys.argv[2], sys.argv[3]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, NEWER, str(tmp_path / "m0.pt"), str(tmp_path / "m1.pt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines == [
        f"pytest-ckpt: warning: torch {NEWER} is newer than the last torch pytest-ckpt was "
        f"reviewed against ({shown(NEWEST)}): its weights_only rules may have changed, so "
        f"audit verdicts are unproven; upgrade pytest-ckpt or use torch<={shown(NEWEST)}"
    ]
    assert done.stdout.count("ok") == 2
