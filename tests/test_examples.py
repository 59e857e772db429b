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

from tests.forked_runs import run_python

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KERNELS = ("native", "default")


def run_pytest(folder: str, kernels: str, *args: str) -> subprocess.CompletedProcess[str]:
    # A user's shell: no kernel override, and none of an outer pytest-xdist worker's variables
    # (syrupy reads PYTEST_XDIST_WORKER and then leaves its summary out).
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "ATEN_CPU_CAPABILITY" and not k.startswith("PYTEST_")
    }
    if kernels != "native":
        env["ATEN_CPU_CAPABILITY"] = kernels
    return run_python(
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


@pytest.mark.parametrize(
    # another CPU's kernels: the quickstart and test_snapshots check them fast; 63 items twice
    # cost over a minute
    "kernels",
    [KERNELS[0], pytest.param(KERNELS[1], marks=pytest.mark.slow)],
)
def test_reference_example_whole_matrix_matches_its_committed_snapshots(
    kernels: str, tmp_path: Path
) -> None:
    """Under two xdist workers too: the snapshots were recorded by a serial run."""
    report = tmp_path / "report.md"
    result = run_pytest("reference", kernels, "-n", "2", f"--ckpt-report={report}")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "63 passed" in result.stdout and "21 snapshots passed" in result.stdout
    assert "63/63 checks passed" in report.read_text()


FRAMEWORK_EXAMPLES = {
    # folder: (module that must be importable, what the run prints)
    "lightning": ("lightning", "7 passed"),  # 2 stages x 3 items + its .ckpt golden test
    "transformers": ("transformers", "6 passed"),
    "sb3": ("stable_baselines3", "3 passed"),
}


@pytest.mark.slow  # 10-13 s each with the framework installed: `make test-slow`
@pytest.mark.parametrize("folder", sorted(FRAMEWORK_EXAMPLES))
def test_framework_example_passes_the_matrix_against_its_snapshots(folder: str) -> None:
    """Where the framework is installed (CI may not install it), this CPU's kernels only; the
    snapshots were checked under ATEN_CPU_CAPABILITY=default too. The adapters themselves are
    tested in tests/adapters on every run."""
    module, passed = FRAMEWORK_EXAMPLES[folder]
    pytest.importorskip(module)
    result = run_pytest(folder, "native", "--ckpt-roundtrip")
    assert result.returncode == 0, result.stdout[-3000:]
    assert passed in result.stdout and "snapshot" in result.stdout


def test_sb3_save_and_load_do_not_resume_exactly_and_the_failure_says_why() -> None:
    pytest.importorskip("stable_baselines3")
    subject = "sb3_subject:make_save_load_subject"
    result = run_pytest(
        "sb3", "native", "--ckpt-roundtrip", "--ckpt-subject", subject, "-k", "resume"
    )
    assert result.returncode == 1, result.stdout[-3000:]
    readme = (EXAMPLES / "sb3" / "README.md").read_text()
    expected = [
        "ResumeMismatch: the global torch RNG was drawn from during the step but its state is "
        "not in export_state(): save torch.get_rng_state() and torch.set_rng_state() it at the "
        "end of rebuild()",
        "  and: system._last_obs (a numpy array) changed during the step but is None in the "
        "resumed run; it is not in export_state(): save it as a tensor (torch.from_numpy) in "
        "export_state() and restore it in rebuild()",
        "  and: system.env.envs[0].env.env.env.state (a numpy array) changed during the step but "
        "is None in the resumed run; it is not in export_state(): save it as a tensor "
        "(torch.from_numpy) in export_state() and restore it in rebuild()",
    ]
    for line in expected:
        assert line in result.stdout
        assert line in readme
