"""A user project's own mypy reads our types (py.typed): a wrongly typed argument to
`ModuleSubject` is an error there, a correct use is clean (issue 25)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pytest_ckpt

pytest.importorskip("mypy", reason="mypy is in the dev extra")

CORRECT = """
    import torch
    from pytest_ckpt import ModuleSubject, StepResult, Subject

    subject: Subject = ModuleSubject(
        lambda: torch.nn.Linear(4, 1),
        make_batch=lambda g: (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)),
        make_optimizer=lambda model: torch.optim.AdamW(model.parameters(), lr=1e-3),
        make_schedulers=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3),
        stages={"WARMUP": 2, "DECAY": 6},
    )
    result: StepResult = subject.step(subject.build(grid=(1, 1), stage="WARMUP", seed=0))
"""

WRONG = """
    import torch
    from pytest_ckpt import ModuleSubject

    ModuleSubject(lambda: torch.nn.Linear(4, 1), make_batch=lambda g: g, stages=["WARMUP"])
    ModuleSubject(lambda: "not a model", make_batch=lambda g: g)
"""


@pytest.mark.slow  # mypy reads torch's annotations: ~15-45 s
def test_user_mypy_reports_a_wrongly_typed_argument_and_passes_a_correct_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "correct.py").write_text(textwrap.dedent(CORRECT))
    (tmp_path / "wrong.py").write_text(textwrap.dedent(WRONG))
    # The package as an installed one: found on the path, read only through py.typed
    # (an editable install's import hook is invisible to mypy).
    package_root = str(Path(pytest_ckpt.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": package_root}
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "correct.py", "wrong.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert run.returncode == 1, run.stdout + run.stderr
    assert not [line for line in errors if not line.startswith("wrong.py:")], run.stdout
    assert any(
        line.startswith("wrong.py:5:") and '"stages"' in line and "Mapping[str, int]" in line
        for line in errors
    ), run.stdout
    assert any(
        line.startswith("wrong.py:6:") and "Module" in line and "str" in line for line in errors
    ), run.stdout
