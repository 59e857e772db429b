"""torch's refusal is told in one line even when its message cannot be shown: an error raised
with a tensor argument shows that tensor's repr, which raises for stage 2's meta stand-ins
(the nightly differential found one: `_codecs.encode` given a quantized stand-in)."""

from __future__ import annotations

import pytest

from pytest_ckpt.audit import oracle


class Unshowable:
    def __repr__(self) -> str:
        raise NotImplementedError(
            "Could not run 'aten::qscheme' with arguments from 'QuantizedMeta'"
        )


def test_a_refusal_whose_arguments_cannot_be_shown_is_still_one_line() -> None:
    err = TypeError(Unshowable(), "latin1", 3.7)
    assert oracle._one_line(err) == "TypeError: TypeError with an argument that cannot be shown"


def test_such_a_refusal_is_torchs_refusal_not_a_traceback() -> None:
    def job() -> None:
        raise TypeError(Unshowable(), "latin1")

    with pytest.raises(oracle.TorchRefusal, match="cannot be shown"):
        oracle._refusing(job)
