"""The example projects behave as the README says, run the way a user runs them, against their
committed snapshots, with this machine's kernels and with another CPU's (`ATEN_CPU_CAPABILITY=
default`: torch's portable kernels, whose float results differ as another CPU's would)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KERNELS = ("native", "default")


def run_pytest(folder: str, kernels: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    if kernels != "native":
        env["ATEN_CPU_CAPABILITY"] = kernels
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=EXAMPLES / folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("kernels", KERNELS)
def test_quickstart_passes_its_tests_and_the_matrix(kernels: str) -> None:
    result = run_pytest("quickstart", kernels, "--ckpt-roundtrip")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "27 passed" in result.stdout and "9 snapshots passed" in result.stdout
    assert re.search(r"BLENDING\s+ok/ok/ok\s+ok/ok/ok", result.stdout)


@pytest.mark.parametrize("kernels", KERNELS)
def test_broken_example_fails_exactly_as_the_readme_shows(kernels: str) -> None:
    result = run_pytest("broken", kernels, "--ckpt-roundtrip")
    assert result.returncode == 1
    assert "3 failed, 6 passed" in result.stdout and "2 snapshots passed" in result.stdout
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


@pytest.mark.parametrize("kernels", KERNELS)
def test_reference_example_whole_matrix_matches_its_committed_snapshots(
    kernels: str, tmp_path: Path
) -> None:
    """Under two xdist workers too: the snapshots were recorded by a serial run."""
    report = tmp_path / "report.md"
    result = run_pytest("reference", kernels, "-n", "2", f"--ckpt-report={report}")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "63 passed" in result.stdout and "21 snapshots passed" in result.stdout
    assert "63/63 checks passed" in report.read_text()
