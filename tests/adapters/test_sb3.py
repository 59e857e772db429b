"""SB3: `SB3Subject` runs SB3's own `save` / `load` and says what it cannot resume; the
example's exact subject declares resume steps that reach an episode's end, so a lost
environment RNG fails there and only warns at one step. Runs where stable-baselines3 and
gymnasium are installed (`pip install -c constraints.txt stable-baselines3 gymnasium`)."""

from __future__ import annotations

import pathlib
import sys
import warnings

import pytest
import torch

pytest.importorskip("stable_baselines3")
gym = pytest.importorskip("gymnasium")

from stable_baselines3 import PPO  # noqa: E402

from pytest_ckpt.adapters.sb3 import SB3ResumeWarning, SB3Subject  # noqa: E402
from pytest_ckpt.checks.rng_reads import UnreadRngWarning  # noqa: E402
from pytest_ckpt.checks.roundtrip import check_resume  # noqa: E402
from pytest_ckpt.errors import ResumeMismatch  # noqa: E402

EXAMPLE = pathlib.Path(__file__).parents[2] / "examples" / "sb3"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import sb3_subject

    yield sb3_subject
    sys.modules.pop("sb3_subject", None)


def ppo(env, seed: int) -> PPO:
    return PPO(
        "MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=2, seed=seed,
        policy_kwargs={"net_arch": [16]}, device="cpu", verbose=0,
    )  # fmt: skip


def cartpole():
    return gym.make("CartPole-v1", disable_env_checker=True)


def test_sb3s_own_save_and_load_fail_resume_and_the_reasons_are_said(tmp_path) -> None:
    """The causes come first in the failure (the global RNGs restarted, `_last_obs` and the
    pole dropped); the warning says why SB3 cannot do better and what `load` unpickles."""
    subject = SB3Subject(ppo, make_env=cartpole)
    assert subject.resume_steps == 2
    model = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.warns(SB3ResumeWarning) as said, pytest.raises(ResumeMismatch) as failed:
        check_resume(subject, model, subject.resume_steps, tmp_path / "a.pt")
    first, second, third = str(failed.value).splitlines()[:3]
    assert first.startswith("the global torch RNG was drawn from during the step but its st")
    assert "system._last_obs (a numpy array) changed during the step but is None" in third
    assert "numpy's global RNG" in second
    (message,) = [str(w.message) for w in said if w.category is SB3ResumeWarning]
    lines = message.splitlines()
    assert lines[0] == "PPO.load cannot resume sb3 exactly:"
    assert lines[1].startswith("  it calls set_random_seed(0): the global RNGs")
    assert "force_reset=True drops _last_obs" in lines[2]
    assert "VecNormalize.load uses plain pickle.load" in lines[3]
    assert "'policy_class'" in lines[4] and "with cloudpickle whatever weights_only" in lines[4]


def test_force_reset_false_keeps_last_obs_and_the_warning_says_the_env_is_fresh(tmp_path):
    subject = SB3Subject(ppo, make_env=cartpole, force_reset=False)
    model = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.warns(SB3ResumeWarning, match="force_reset=False keeps _last_obs, but the"):
        rebuilt = subject.rebuild(subject.export_state(model))
    assert (rebuilt._last_obs == model._last_obs).all()


def test_the_example_resumes_exactly_over_its_own_resume_steps(tmp_path, example) -> None:
    subject = example.make_exact_subject()
    model = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    episodes = model._episode_num, len(model.env.envs[0].episode_returns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_resume(subject, model, subject.resume_steps, tmp_path / "a.pt")
    assert len(model.env.envs[0].episode_returns) > episodes[1]  # an episode ended in them
    unread = [str(w.message) for w in caught if w.category is UnreadRngWarning]
    assert not any("env._np_random" in m for m in unread), unread


def test_a_lost_env_rng_passes_one_step_with_a_warning_and_fails_the_subjects_steps(
    tmp_path, example
) -> None:
    """The environment restarts its RNG from the seed (as a fresh env does): invisible until
    an episode ends."""

    class ForgetsTheEnvRng(example.ExactSubject):
        def export_state(self, model):
            state = super().export_state(model)
            del state["env"]["np_random"]
            return state

        def rebuild(self, state):
            fresh = example.make_model(state["seed"]).env.envs[0].unwrapped.np_random
            env = {**state["env"], "np_random": fresh.bit_generator.state}
            return super().rebuild({**state, "env": env})

    subject = ForgetsTheEnvRng()
    model = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.warns(UnreadRngWarning, match=r"env\._np_random .*: export_state\(\) misses it"):
        check_resume(subject, model, 1, tmp_path / "one.pt")
    model = subject.build(grid=(1, 1), stage="TRAINING", seed=0)
    with pytest.raises(ResumeMismatch, match=r"^system\.env\.envs\[0\]\.env\.env\.env\._np_ra"):
        check_resume(subject, model, subject.resume_steps, tmp_path / "two.pt")
