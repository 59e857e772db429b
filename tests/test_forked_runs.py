"""The suite's forked pytest runs (`tests.forked_runs`) see what a subprocess would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.forked_runs import ForkedRun, forked_popen, run_python

WHAT_A_RUN_SEES = """
import json, os, sys

def test_record():
    seen = {
        "cwd": os.getcwd(),
        "argv0": os.path.basename(sys.argv[0]),
        "path_head": sys.path[:2],
        "label": os.environ.get("CKPT_FORK_LABEL"),
        "torch_threads": __import__("torch").get_num_threads(),
        "tests_package": "tests" in sys.modules,
    }
    with open(os.environ["CKPT_FORK_OUT"], "w") as handle:
        json.dump(seen, handle)
"""


def test_a_forked_run_sees_what_a_subprocess_sees(pytester: pytest.Pytester, monkeypatch) -> None:
    pytester.makepyfile(test_seen=WHAT_A_RUN_SEES)
    monkeypatch.setenv("CKPT_FORK_LABEL", "set in the test")
    monkeypatch.setenv("CKPT_FORK_OUT", str(pytester.path / "forked.json"))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    forked = json.loads((pytester.path / "forked.json").read_text())

    env = {**os.environ, "CKPT_FORK_OUT": str(pytester.path / "real.json")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH", "")]))
    real = subprocess.run(
        [sys.executable, "-mpytest", "-p", "no:cacheprovider"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    assert real.returncode == 0, real.stdout.decode()[-2000:]
    assert forked == json.loads((pytester.path / "real.json").read_text())
    assert forked["label"] == "set in the test" and forked["tests_package"] is False


def test_a_run_under_other_kernels_is_a_real_subprocess(pytester: pytest.Pytester, monkeypatch):
    """torch reads ATEN_CPU_CAPABILITY when it starts: the forkserver's torch cannot honour it."""
    out, err = pytester.path / "out", pytester.path / "err"
    with out.open("w") as stdout, err.open("w") as stderr:
        args = [sys.executable, "-mpytest", "--version"]
        real_popen = pytest.Pytester.popen.__get__(pytester)
        same = forked_popen(pytester, real_popen, args, stdout, stderr)
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
        other = forked_popen(pytester, real_popen, args, stdout, stderr)
        assert (same.wait(60), other.wait(60)) == (0, 0)
    assert isinstance(same, ForkedRun)
    assert isinstance(other, subprocess.Popen)


def test_a_forked_cli_call_prints_and_exits_as_a_subprocess_does(tmp_path) -> None:
    import torch

    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(2)}, good)
    for args in (["audit", str(good)], ["audit", "/dev/zero"], ["audit", "--no-such-option"]):
        cmd = [sys.executable, "-m", "pytest_ckpt.cli", *args]
        forked = run_python(cmd, capture_output=True, text=True, timeout=120)
        real = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        assert (forked.returncode, forked.stdout, forked.stderr) == (
            real.returncode,
            real.stdout,
            real.stderr,
        ), args
