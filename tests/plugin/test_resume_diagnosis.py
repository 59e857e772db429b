"""A resume failure names what the step reads first and what it only overwrites last, and
shows every cause with -v (issue 23)."""

from __future__ import annotations

# A model with five statistics its forward reads before updating (persistent=False: the
# checkpoint forgets them, as a VecNormalize left out of the state forgets its running
# statistics) and a scratch copy of the last input, registered first, which the forward
# overwrites before anything reads it (as VecNormalize's buf_obs).
NORMALIZER_SUBJECT = """
import torch

from pytest_ckpt import ModuleSubject

STATISTICS = ("obs_mean", "obs_var", "ret_mean", "ret_var", "count")


class Normalizer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("last_input", torch.zeros(8, 4), persistent=False)
        for name in STATISTICS:
            self.register_buffer(name, torch.zeros(4), persistent=False)
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x):
        if not self.training:
            return self.linear(x)
        self.last_input.copy_(x)
        shift = sum(getattr(self, name) for name in STATISTICS)
        out = self.linear(x - shift)
        self.obs_mean.mul_(0.9).add_(0.1 * x.mean(0))
        self.obs_var.mul_(0.9).add_(0.1 * x.var(0))
        self.ret_mean.mul_(0.8).add_(0.2 * x.mean(0))
        self.ret_var.mul_(0.8).add_(0.2 * x.var(0))
        self.count.add_(1)
        return out


def make():
    return ModuleSubject(
        Normalizer,
        make_batch=lambda g: (torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)),
        name="normalizer",
    )
"""

# The same subject through the ckpt_resume fixture, in the same run: -v reaches it too.
USER_TEST = """
def test_user_resume(ckpt_subject, ckpt_resume):
    ckpt_resume(ckpt_subject.build(grid=(1, 1), stage="TRAINING", seed=0))
"""

ARGS = ("--ckpt-roundtrip", "--ckpt-subject=normalizer_subject:make", "-k", "resume")


def run(pytester, *args: str):
    pytester.syspathinsert()
    pytester.makepyfile(normalizer_subject=NORMALIZER_SUBJECT, test_user=USER_TEST)
    result = pytester.runpytest_subprocess(*ARGS, *args)
    result.assert_outcomes(failed=2, deselected=2)
    return result


def statistic(name: str) -> str:
    return (
        f"system['model'].{name} (a buffer of Normalizer, persistent=False) changed during the "
        "step; it is not in export_state(): register the buffer with persistent=True, or save "
        "it in export_state()"
    )


READ_FIRST = [
    f"ResumeMismatch: {statistic('obs_mean')}",
    *(f"  and: {statistic(name)}" for name in ("obs_var", "ret_mean", "ret_var", "count")),
]
EFFECTS = "resuming from the checkpoint differs from continuing after 1 step(s):"


def test_with_v_every_cause_is_shown_read_state_first_overwritten_state_last(pytester) -> None:
    """Both the generated item and the ckpt_resume fixture show all six causes, the scratch
    buffer last and said to be only overwritten."""
    output = str(run(pytester, "-v").stdout)
    scratch = (
        "  and: system['model'].last_input (a buffer of Normalizer, persistent=False) differs "
        "at the start of the resumed step but is equal in both runs after it: the step only "
        "overwrites it (scratch state), so it is an unlikely cause"
    )
    assert output.count("\n".join([*READ_FIRST, scratch, EFFECTS])) == 2
    assert "more differences in the live state" not in output


def test_without_v_five_causes_are_shown_and_the_rest_counted(pytester) -> None:
    output = str(run(pytester).stdout)
    more = "  ... and 1 more differences in the live state (-v shows all)"
    assert output.count("\n".join([*READ_FIRST, more, EFFECTS])) == 2
    assert "last_input" not in output


def test_without_v_the_report_still_holds_every_cause(pytester) -> None:
    """The terminal shows five causes; the `--ckpt-report` report keeps all six (the
    scratch buffer too), since nothing a failure says may be lost."""
    output = str(run(pytester, "--ckpt-report=report.md").stdout)
    assert "last_input" not in output
    report = (pytester.path / "report.md").read_text()
    assert "last_input (a buffer of Normalizer, persistent=False) differs" in report
    assert "more differences in the live state" not in report
