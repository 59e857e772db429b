"""The bundled reference system as a `pytest_ckpt.Subject`: the default `--ckpt-subject`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_ckpt.reference.hosts import HOSTS
from pytest_ckpt.reference.lifecycle import SeedStage
from pytest_ckpt.reference.ppo import Operation
from pytest_ckpt.reference.scenarios import build_at_stage
from pytest_ckpt.reference.slots import SlotConfig
from pytest_ckpt.reference.trainer import Trainer, seed_global_rngs
from pytest_ckpt.subject import StepResult
from pytest_ckpt.vocabulary import LIFECYCLE_STAGES, Grid


class ReferenceSubject:
    """The bundled morphogenetic model under its PPO controller.

    `build` drives every slot of a `rows x cols` grid to the stage (real germination,
    training and blending), hands the model to a PPO `Trainer` and runs one warm-up batch in
    which the controller only waits; the exported state is the trainer's `TrainingState`,
    and a step is one PPO update.
    """

    supports_grids = True
    # Its training is chaotic: the same seeded run under another CPU's kernels
    # (ATEN_CPU_CAPABILITY=default|avx2|avx512) moves trained values by up to 100% (Adam
    # moments, rewards, losses, normalizer statistics; a policy loss changes sign) and
    # accuracies by 25 points: `benchmarks/snapshot_spread.py examples/reference`. So trained
    # float values are neither recorded nor compared; everything else is: structure, keys,
    # shapes, dtypes, integer tensors, stages, slot ids, counters, telemetry order and payload
    # keys exactly, and untrained floats (config, clock, blend alpha, learning-rate schedule) at
    # the default tolerance.
    snapshot_tolerances: tuple[str, ...] = (
        "state.policy.*: unchecked",
        "state.optimizer.state.*: unchecked",
        "state.obs_norm.*: unchecked",
        "state.reward_norm.*: unchecked",
        "state.env.host_optimizer.state.*: unchecked",
        "state.env.model.state_dict.*.weight: unchecked",
        "state.env.model.state_dict.*.bias: unchecked",
        "state.env.model.state_dict.*.running_*: unchecked",
        *(
            f"*.{name}: unchecked"
            for name in (
                "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
                "explained_variance", "value_std", "return_std", "reward", "reward_total",
                "reward_mean", "loss_component", "contribution_component", "loss", "accuracy",
                "train_loss", "train_accuracy", "last_loss", "last_accuracy", "best_loss",
                "grad_norm", "episode_return",
            )
        ),
    )  # fmt: skip

    def __init__(self, host: str = "cnn", *, blend_epochs: int = 10) -> None:
        if host not in HOSTS:
            raise ValueError(f"unknown host {host!r}; expected one of {', '.join(HOSTS)}")
        self.host = host
        self.blend_epochs = blend_epochs
        self.name = f"reference-{host}"

    def stages(self) -> Sequence[str]:
        return LIFECYCLE_STAGES

    def check_grid(self, grid: Grid) -> None:
        """Each row of slots needs an injection depth in the host: ValueError naming the first
        slot that has none (`--ckpt-grids 5x1` on a 4-block host is a usage error)."""
        host = HOSTS[self.host]()
        for slot_id in SlotConfig.grid(*grid).slot_ids:
            host.injection_point(slot_id)

    def build(self, *, grid: Grid, stage: str, seed: int) -> Any:
        """Seeds the global torch and python RNGs too: the TrainingState captures them, so a
        build must not depend on whatever ran earlier in the process."""
        model = build_at_stage(
            self.host,
            SlotConfig.grid(*grid),
            SeedStage.from_name(stage),
            seed=seed,
            blend_epochs=self.blend_epochs,
        )
        seed_global_rngs(seed)
        trainer = Trainer(host=self.host, slots=model.slots, seed=seed, initial_model=model)
        # A warm-up batch in which the controller may only wait: Adam moments, normalizer
        # statistics, the adapted entropy coefficient and the counters become non-trivial
        # (so a resume that drops one of them is caught) while every seed keeps its stage.
        trainer.run_update(operations={Operation.WAIT})
        trainer.telemetry.drain()
        return trainer

    def export_state(self, system: Any) -> Mapping[str, Any]:
        return system.state_dict()

    def rebuild(self, state: Mapping[str, Any]) -> Any:
        return Trainer.from_state_dict(state)

    def step(self, system: Any) -> StepResult:
        stats = system.run_update()
        events = [event.to_dict() for event in system.telemetry.drain()]
        return StepResult(metrics=dataclasses.asdict(stats), telemetry=events)
