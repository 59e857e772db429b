"""The framework adapters import without their framework and say in one line what to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_ckpt.adapters.accelerate import AccelerateSubject
from pytest_ckpt.adapters.lightning import LightningSubject
from pytest_ckpt.adapters.sb3 import SB3Subject
from pytest_ckpt.adapters.transformers import TransformersSubject


def test_importing_the_adapters_imports_no_framework_and_no_torch() -> None:
    code = (
        "import sys, pytest_ckpt.adapters.lightning, pytest_ckpt.adapters.transformers\n"
        "import pytest_ckpt.adapters.accelerate, pytest_ckpt.adapters.sb3\n"
        "import pytest_ckpt.adapters.transformers_native\n"
        "frameworks = ('lightning', 'transformers', 'accelerate', 'stable_baselines3', 'torch')\n"
        "print(sorted(m for m in frameworks if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize(
    ("adapter", "hidden", "package"),
    [
        (LightningSubject, ("lightning", "lightning.pytorch"), "lightning"),
        (TransformersSubject, ("transformers",), "transformers"),
        (AccelerateSubject, ("accelerate",), "accelerate"),
        (SB3Subject, ("stable_baselines3",), "stable-baselines3"),
    ],
)
def test_an_adapter_without_its_framework_names_the_package(
    monkeypatch: pytest.MonkeyPatch, adapter, hidden, package
) -> None:
    for module in hidden:
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(ImportError) as failure:
        if adapter is AccelerateSubject:
            adapter(lambda: None, make_dataloader=lambda: None)
        elif adapter is SB3Subject:
            adapter(lambda env, seed: None, make_env=lambda: None)
        else:
            adapter(lambda: None, make_batch=lambda g: None)
    assert str(failure.value) == (
        f"{adapter.__name__} needs {package}, which is not installed: pip install {package}"
    )
