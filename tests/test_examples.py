"""The example projects behave as the README says: run the way a user runs them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_pytest(folder: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=EXAMPLES / folder,
        capture_output=True,
        text=True,
        check=False,
    )


def test_quickstart_passes_its_tests_and_the_matrix() -> None:
    result = run_pytest("quickstart", "--ckpt-roundtrip")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "27 passed" in result.stdout
    assert re.search(r"BLENDING\s+ok/ok/ok\s+ok/ok/ok", result.stdout)


def test_broken_example_fails_exactly_as_the_readme_shows() -> None:
    result = run_pytest("broken", "--ckpt-roundtrip")
    assert result.returncode == 1
    assert "3 failed, 6 passed" in result.stdout
    readme = (EXAMPLES.parent / "README.md").read_text()
    expected = [
        "CheckpointLoadError: torch.load(weights_only=True) refused the checkpoint: 1 object(s) "
        "it cannot load:",
        "  root['model']['_extra_state']['stages']['r0c0'] is broken_subject.Stage (an Enum): "
        "store .value (or .name) and rebuild the enum when loading",
        "BLENDING      FAIL/FAIL/FAIL",
    ]
    for line in expected:
        assert line in result.stdout
        assert line in readme


def test_reference_example_blending_row_matches_its_committed_snapshots() -> None:
    result = run_pytest("reference", "-k", "BLENDING")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "9 passed" in result.stdout and "3 snapshots passed" in result.stdout


@pytest.mark.slow
def test_reference_example_whole_matrix() -> None:
    result = run_pytest("reference")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "63 passed" in result.stdout
