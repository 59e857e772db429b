"""A failure in the subject's own code is a SubjectError whose first lines are the cause."""

from __future__ import annotations

import pytest
import torch

from pytest_ckpt import ModuleSubject, SubjectError
from pytest_ckpt.checks.roundtrip import check_resume, check_roundtrip


def batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)


def net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


class ForgetsTheLastLayer(ModuleSubject):
    def make_model_for(self, state):
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh())


def test_a_strict_load_error_in_rebuild_says_the_unexpected_keys_first(tmp_path) -> None:
    subject = ForgetsTheLastLayer(net, make_batch=batch, name="strict")
    system = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.raises(SubjectError) as failure:
        check_roundtrip(subject, system, tmp_path / "a.pt")
    lines = str(failure.value).splitlines()
    assert lines[0] == (
        "subject strict: rebuild() raised RuntimeError: Error(s) in loading state_dict for "
        "Sequential:"
    )
    assert lines[1] == '    Unexpected key(s) in state_dict: "2.weight", "2.bias".'
    assert lines[2].startswith("  raised at torch/nn/modules/module.py:")
    assert lines[3].startswith("  called from ") and lines[3].endswith(" in rebuild")
    assert "save what the structure is built from (a config)" in lines[4]
    assert len(lines) == 5


def test_resuming_another_subjects_system_says_which_system_it_got(tmp_path) -> None:
    subject = ModuleSubject(net, make_batch=batch, name="plain")
    other_system = {"net": net(), "step": 3}
    with pytest.raises(SubjectError) as failure:
        check_resume(subject, other_system, 1, tmp_path / "a.pt")
    lines = str(failure.value).splitlines()
    assert lines[0] == "subject plain: export_state() raised KeyError: 'model'"
    assert "is this system one this subject's build() made?" in lines[-1]
    assert lines[-1].endswith("this is a dict")
