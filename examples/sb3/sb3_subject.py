"""Stable-Baselines3 PPO on CartPole as two pytest-ckpt subjects.

`make_save_load_subject`: what SB3's documentation shows for checkpoints, `model.save()` and
`PPO.load()` (the zip's members are the exported state, its JSON `data` member parsed). It
does not resume exactly, and `pytest --ckpt-roundtrip` says why: `PPO.load` re-seeds the
global RNGs with the original seed (`set_random_seed`), `force_reset` throws away `_last_obs`,
and the environment's state (CartPole's pole, its `np_random`, the episode counters of the
Monitor and TimeLimit wrappers, the vector env's buffers) is not saved at all. Loading the
zip also unpickles its cloudpickled `data` entries, whatever `weights_only` says.

`make_exact_subject`: the fix. The export is primitives and tensors only (policy and
optimizer state_dicts, the counters, `_last_obs`, the environment's state, the global RNGs),
and `rebuild` constructs a fresh PPO with the same hyper-parameters and restores each piece
after the constructor has re-seeded everything. Continued and resumed runs are then equal.

One `learn(N_STEPS, reset_num_timesteps=False)` call is one step. A learning-rate schedule
would see its progress computed per call (`_total_timesteps` = timesteps so far + N), which
is why this example keeps SB3's constant default: continued and resumed runs make the same
calls, so it is the same either way, but neither matches one long `learn(total)`.
"""

from __future__ import annotations

import io
import json
import random
import time
import zipfile
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO

from pytest_ckpt import StepResult

N_STEPS = 32  # environment steps per rollout; one rollout and one update per step


def make_model(seed: int) -> PPO:
    return PPO(
        "MlpPolicy",
        gym.make("CartPole-v1", disable_env_checker=True),
        n_steps=N_STEPS,
        batch_size=N_STEPS,
        n_epochs=2,
        seed=seed,
        policy_kwargs={"net_arch": [16]},
        device="cpu",
        verbose=0,
    )


class PPOSubject:
    """What both subjects share: stages, build, and a step that is one rollout + update."""

    supports_grids = False
    warmup_steps = 2  # the optimizer state is non-empty and an episode has ended
    # the resume check's steps: CartPole's RNG is drawn only at a reset, and the first
    # 32-step rollout after the checkpoint ends no episode (the second does, at seed 0)
    resume_steps = 2

    def stages(self):
        return ("TRAINING",)

    def build(self, *, grid, stage, seed):
        model = make_model(seed)
        for _ in range(self.warmup_steps):
            self.step(model)
        return model

    def step(self, model: PPO) -> StepResult:
        model.learn(N_STEPS, reset_num_timesteps=False)
        buffer = model.rollout_buffer
        return StepResult(
            metrics={
                "timesteps": model.num_timesteps,
                "updates": model._n_updates,
                "actions": [int(a) for a in buffer.actions.reshape(-1)],
                "reward": float(buffer.rewards.sum()),
                "value_mean": float(buffer.values.mean()),
            },
            telemetry=[{"event": "update", "timesteps": model.num_timesteps}],
        )


class SaveLoadSubject(PPOSubject):
    name = "sb3-save-load"

    def export_state(self, model: PPO) -> dict[str, Any]:
        buffer = io.BytesIO()
        model.save(buffer)
        with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        members["data"] = json.loads(members["data"])
        return members

    def rebuild(self, state: dict[str, Any]) -> PPO:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, content in state.items():
                archive.writestr(name, json.dumps(content) if name == "data" else content)
        buffer.seek(0)
        return PPO.load(buffer, env=gym.make("CartPole-v1", disable_env_checker=True), device="cpu")


class ExactSubject(PPOSubject):
    name = "sb3-exact"

    def export_state(self, model: PPO) -> dict[str, Any]:
        return {
            "seed": model.seed,
            "policy": model.policy.state_dict(),
            "optimizer": model.policy.optimizer.state_dict(),
            "num_timesteps": model.num_timesteps,
            "n_updates": model._n_updates,
            "episode_num": model._episode_num,
            "last_obs": torch.from_numpy(model._last_obs.copy()),
            "last_episode_starts": torch.from_numpy(model._last_episode_starts.copy()),
            "env": env_state(model.env),
            "rng": {
                "torch": torch.get_rng_state(),
                "python": random.getstate(),
                "numpy": numpy_rng_state(np.random.get_state()),
            },
        }

    def rebuild(self, state: dict[str, Any]) -> PPO:
        model = make_model(state["seed"])  # its constructor re-seeds: restore after it
        model.policy.load_state_dict(state["policy"])
        model.policy.optimizer.load_state_dict(state["optimizer"])
        model.num_timesteps = state["num_timesteps"]
        model._n_updates = state["n_updates"]
        model._episode_num = state["episode_num"]
        model._last_obs = state["last_obs"].numpy().copy()
        model._last_episode_starts = state["last_episode_starts"].numpy().copy()
        set_env_state(model.env, state["env"])
        # what `learn`'s set-up makes and a constructed model lacks: the episode-statistics
        # deques the logger reads (not training state) and its clock; every learn call sets
        # start_time again
        model.ep_info_buffer = deque(maxlen=model._stats_window_size)
        model.ep_success_buffer = deque(maxlen=model._stats_window_size)
        model.start_time = time.time_ns()
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(numpy_rng_from(state["rng"]["numpy"]))
        return model


def env_state(vec_env: Any) -> dict[str, Any]:
    """A DummyVecEnv of one Monitor(TimeLimit(...(CartPole))): what its next step reads."""
    (monitor,) = vec_env.envs
    cartpole = monitor.unwrapped
    return {
        "pole": torch.from_numpy(np.array(cartpole.state, dtype=np.float64)),
        "steps_beyond_terminated": cartpole.steps_beyond_terminated,
        "np_random": cartpole.np_random.bit_generator.state,
        "elapsed_steps": monitor.env._elapsed_steps,
        "monitor_rewards": list(monitor.rewards),
        "monitor_needs_reset": monitor.needs_reset,
        "monitor_total_steps": monitor.total_steps,
    }


def set_env_state(vec_env: Any, state: dict[str, Any]) -> None:
    (monitor,) = vec_env.envs
    cartpole = monitor.unwrapped
    cartpole.state = state["pole"].numpy().copy()
    cartpole.steps_beyond_terminated = state["steps_beyond_terminated"]
    cartpole.np_random.bit_generator.state = state["np_random"]
    monitor.env._elapsed_steps = state["elapsed_steps"]
    monitor.env.env._has_reset = True  # OrderEnforcing: the episode is under way
    monitor.rewards = list(state["monitor_rewards"])
    monitor.needs_reset = state["monitor_needs_reset"]
    monitor.total_steps = state["monitor_total_steps"]
    # the seed set by the constructor is for the vector env's first reset(), which the live
    # env has had: a later reset() must not re-seed the restored np_random
    vec_env._seeds = [None] * vec_env.num_envs


def numpy_rng_state(state: tuple) -> dict[str, Any]:
    """np.random.get_state() without its numpy array, which weights_only=True refuses."""
    name, keys, pos, has_gauss, cached_gaussian = state
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}  # fmt: skip


def numpy_rng_from(state: dict[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return (state["name"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"])


def make_save_load_subject() -> SaveLoadSubject:
    return SaveLoadSubject()


def make_exact_subject() -> ExactSubject:
    return ExactSubject()
