"""`SB3Subject`: a Stable-Baselines3 algorithm checkpointed as SB3 documents it,
`model.save()` and `Algorithm.load(..., env=...)`, as a Subject (native only).

    SB3Subject(
        lambda env, seed: PPO("MlpPolicy", env, n_steps=32, seed=seed, device="cpu"),
        make_env=lambda: gym.make("CartPole-v1"),
    )

A step is one `learn(steps_per_call, reset_num_timesteps=False)` (default: one rollout,
`n_steps * n_envs`). The export is the zip `save()` writes, member by member (`data` parsed
from its JSON); `rebuild` writes the zip back and calls the algorithm's own `load` with a
fresh `make_env()`. So what is proven is the user's own save and resume path, and SB3's
does not resume exactly; the subject says why, once, as an `SB3ResumeWarning` at the first
rebuild, instead of hiding it: `load` calls `set_random_seed` with the saved seed (the global
RNGs and the spaces restart from it), `force_reset` (SB3's default) throws `_last_obs` away, and
no environment state is saved (an episode under way, its RNG, the Monitor's counters, a
`VecNormalize`'s statistics, which `VecNormalize.load` reads with plain `pickle.load`). It
also names the `data` entries `load` unpickles with cloudpickle whatever `weights_only`
says: anything in them runs. The resume check then fails with these causes first; an exact
resume needs an export of its own (examples/sb3, `make_exact_subject`).

`resume_steps` (default 2) is the subject's own number of resume steps: a CartPole episode
rarely ends within one 32-step rollout, and the environment's RNG is drawn only at a reset.

Importing this module does not import stable_baselines3; making a subject without it
installed raises an ImportError naming the package (`pip install stable-baselines3`).
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_ckpt.adapters import require
from pytest_ckpt.subject import StepResult
from pytest_ckpt.vocabulary import Grid

DATA_MEMBER = "data"  # SB3's JSON member; entries with ":serialized:" are cloudpickled
SERIALIZED = ":serialized:"


class SB3ResumeWarning(UserWarning):
    """What SB3's own `save` / `load` cannot bring back, said where the resume check shows
    its effects."""


class SB3Subject:
    """An SB3 algorithm made by `make_model(env, seed)` on `make_env()`, saved by `save()`
    and resumed by its class's `load()`. `force_reset` is passed to `load` (SB3's default,
    True, drops `_last_obs`). `stages` maps phase names to steps (default TRAINING: 2)."""

    supports_grids = False

    def __init__(
        self,
        make_model: Callable[[Any, int], Any],
        *,
        make_env: Callable[[], Any],
        steps_per_call: int | None = None,
        stages: Mapping[str, int] | None = None,
        resume_steps: int = 2,
        force_reset: bool = True,
        name: str = "sb3",
    ) -> None:
        require("stable_baselines3", "stable-baselines3", "SB3Subject")
        self.make_model, self.make_env = make_model, make_env
        self.steps_per_call = steps_per_call
        self.stage_steps = dict(stages) if stages is not None else {"TRAINING": 2}
        self.resume_steps, self.force_reset, self.name = resume_steps, force_reset, name
        # the algorithm class's own `load` and name, from the model build() made
        self._load: Callable[..., Any] | None = None
        self._algorithm_name = "the algorithm"
        self._warned = False

    def stages(self) -> Sequence[str]:
        return tuple(sorted(self.stage_steps, key=lambda s: self.stage_steps[s]))

    def build(self, *, grid: Grid, stage: str, seed: int) -> Any:
        if stage not in self.stage_steps:
            raise ValueError(
                f"{self.name} has the stages {', '.join(self.stages())}, not {stage!r}"
            )
        model = self.make_model(self.make_env(), seed)
        self._load, self._algorithm_name = type(model).load, type(model).__name__
        for _ in range(self.stage_steps[stage]):
            self.step(model)
        return model

    def step(self, model: Any) -> StepResult:
        """One `learn` call: one rollout and one update for an on-policy algorithm."""
        calls = self.steps_per_call or int(model.n_steps) * int(model.n_envs)
        model.learn(calls, reset_num_timesteps=False)
        metrics: dict[str, Any] = {"timesteps": model.num_timesteps, "updates": model._n_updates}
        buffer = getattr(model, "rollout_buffer", None)
        if buffer is not None:
            metrics["actions"] = [float(a) for a in buffer.actions.reshape(-1)]
            metrics["reward"] = float(buffer.rewards.sum())
        return StepResult(metrics, [{"event": "update", "timesteps": model.num_timesteps}])

    def export_state(self, model: Any) -> Mapping[str, Any]:
        """The members of the zip `model.save()` writes (`data` as parsed JSON)."""
        buffer = io.BytesIO()
        model.save(buffer)
        with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
            members: dict[str, Any] = {n: archive.read(n) for n in archive.namelist()}
        members[DATA_MEMBER] = json.loads(members[DATA_MEMBER])
        return members

    def rebuild(self, state: Mapping[str, Any]) -> Any:
        """The algorithm's own `load` of the zip, on a fresh environment."""
        if self._load is None:
            raise ValueError(f"{self.name}: build a system before rebuilding one")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, content in state.items():
                archive.writestr(name, json.dumps(content) if name == DATA_MEMBER else content)
        buffer.seek(0)
        if not self._warned:
            self._warned = True
            warnings.warn(SB3ResumeWarning(self.limits(state)), stacklevel=3)
        return self._load(buffer, env=self.make_env(), device="cpu", force_reset=self.force_reset)

    def limits(self, state: Mapping[str, Any]) -> str:
        """What `load` of this checkpoint does not restore, and what it unpickles."""
        data = state.get(DATA_MEMBER, {})
        algorithm = self._algorithm_name
        pickled = sorted(k for k, v in data.items() if isinstance(v, dict) and SERIALIZED in v)
        lines = [
            f"{algorithm}.load cannot resume {self.name} exactly:",
            f"it calls set_random_seed({data.get('seed')!a}): the global RNGs and the action "
            "space restart from the saved seed instead of where the run was",
            "force_reset=True drops _last_obs: the next rollout starts a new episode"
            if self.force_reset
            else "force_reset=False keeps _last_obs, but the fresh environment is not in that "
            "episode",
            "the environment is not saved: an episode under way, its RNG (drawn at each "
            "reset), Monitor/TimeLimit counters, VecNormalize statistics (VecNormalize.load "
            "uses plain pickle.load: anything in the file runs)",
        ]
        if pickled:
            names = ", ".join(ascii(k) for k in pickled)  # names from the file: escaped
            lines.append(
                f"load unpickles the zip's data entries {names} with cloudpickle whatever "
                "weights_only says: anything in them runs"
            )
        return "\n  ".join(lines)
