"""The fixtures users compose in their own tests."""

from __future__ import annotations

USER_TESTS = """
import collections

import pytest
import torch


def test_model_at_stage_round_trips(ckpt_subject, ckpt_model, ckpt_roundtrip, ckpt_stage):
    state = ckpt_subject.export_state(ckpt_model)
    loaded = ckpt_roundtrip(state)
    stages = {
        extra["seed_state"]["stage"]
        for key, extra in loaded["env"]["model"]["state_dict"].items()
        if key.endswith("._extra_state") and key.startswith("seed_slots")
    }
    assert stages == {ckpt_stage}


def test_resume_fixture(ckpt_model, ckpt_resume):
    records = ckpt_resume(ckpt_model, steps=1)
    assert len(records) == 1 and records[0]["telemetry"]


def test_roundtrip_of_a_deque_fails_with_its_path(ckpt_roundtrip):
    ckpt_roundtrip({"history": collections.deque([1, 2], maxlen=3)})


def test_tensor_snapshot(ckpt_snapshot):
    assert ckpt_snapshot == {"weights": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
"""


def test_user_fixtures(ckpt_pytester) -> None:
    ckpt_pytester.makepyfile(test_user=USER_TESTS)
    args = ["--ckpt-stages", "BLENDING", "--ckpt-grids", "1x1", "-p", "no:randomly"]
    # Record only the plain snapshot first: the other tests build the reference system, once.
    ckpt_pytester.runpytest_subprocess(*args, "-k", "tensor_snapshot", "--snapshot-update")
    result = ckpt_pytester.runpytest_subprocess(*args, "-v")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_model_at_stage_round_trips[[]BLENDING-1x1[]] PASSED*",
            "*test_resume_fixture[[]BLENDING-1x1[]] PASSED*",
            "*test_roundtrip_of_a_deque_fails_with_its_path FAILED*",
        ],
        consecutive=False,
    )
    result.stdout.fnmatch_lines(
        ["*root[[]'history'[]] is collections.deque (a deque): store list(d)*"]
    )
    snapshot_file = ckpt_pytester.path / "__snapshots__" / "test_user.ckpt-ambr"
    text = snapshot_file.read_text()
    values = "values=[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]"
    assert f"'weights': Tensor(shape=[2, 3], dtype=float32, {values})" in text


def test_a_conftest_can_override_the_subject_fixture(ckpt_pytester) -> None:
    ckpt_pytester.makeconftest(
        "import pytest\nimport labelled_subject\n\n"
        "@pytest.fixture(scope='session')\ndef ckpt_subject():\n"
        "    return labelled_subject.make()\n"
    )
    ckpt_pytester.makepyfile(
        test_mine="def test_name(ckpt_subject):\n    assert ckpt_subject.name == 'labelled'\n"
    )
    ckpt_pytester.runpytest_subprocess().assert_outcomes(passed=2)
