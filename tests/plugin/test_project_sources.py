"""With the matrix on, explanations that audit a saved file read the user's module sources
from the rootdir too (a run started from elsewhere, `pytest --rootdir=...`, must not lose
them); with the flag off the plugin adds nothing."""

from __future__ import annotations

import pytest

SEARCHED = """
import os

from pytest_ckpt.audit.global_kinds import search_path


def test_rootdir_is_searched(pytestconfig):
    searched = search_path()
    assert os.getcwd() != str(pytestconfig.rootpath)
    assert str(pytestconfig.rootpath) in searched[: searched.index(os.getcwd())]
"""


@pytest.mark.parametrize("flag", [True, False])
def test_the_rootdir_is_searched_for_module_sources_while_the_matrix_runs(
    ckpt_pytester: pytest.Pytester, flag: bool
) -> None:
    project = ckpt_pytester.mkdir("project")
    (project / "test_searched.py").write_text(SEARCHED)
    args = ["--ckpt-subject=labelled_subject:make", "--ckpt-stages=TRAINING", "-k", "searched"]
    if flag:
        args.insert(0, "--ckpt-roundtrip")
    result = ckpt_pytester.runpytest_subprocess(
        *args, f"--rootdir={project}", str(project / "test_searched.py")
    )
    if flag:
        result.assert_outcomes(passed=1)
    else:
        result.assert_outcomes(failed=1)
