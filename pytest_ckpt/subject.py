"""The `Subject` protocol: how a project's own model plugs into the round-trip harness.

A subject builds a live system for a slot grid and a seed, driven to a lifecycle stage;
exports its state as primitives and tensors; rebuilds a fresh system from such a state; and
takes one training step, returning metrics and telemetry payloads. The harness does the rest:
save to a real file, `torch.load(weights_only=True)`, rebuild, compare, resume, snapshot.

Two adapters ship: `ReferenceSubject` (the bundled morphogenetic system and its PPO
controller; the default) and `ModuleSubject` (a plain `nn.Module` + optimizer, one line).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Grid = tuple[int, int]
LIFECYCLE_STAGES = (
    "DORMANT",
    "GERMINATED",
    "TRAINING",
    "BLENDING",
    "PROBATIONARY",
    "FOSSILIZED",
    "PRUNED",
)
DEFAULT_STAGES = ("GERMINATED", "BLENDING", "PROBATIONARY")
DEFAULT_SUBJECT = "pytest_ckpt.subject:ReferenceSubject"


@dataclass(slots=True, frozen=True)
class StepResult:
    """What one step produced: scalar metrics and telemetry payloads (primitives only)."""

    metrics: Mapping[str, Any]
    telemetry: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


@runtime_checkable
class Subject(Protocol):
    """What the harness needs from a project. `name` labels reports and snapshots."""

    name: str
    supports_grids: bool

    def stages(self) -> Sequence[str]:
        """Every lifecycle stage this subject can be driven to, in lifecycle order."""
        ...

    def build(self, *, grid: Grid, stage: str, seed: int) -> Any:
        """A live system on a `grid` of slots, at `stage`, deterministic for `seed`."""
        ...

    def export_state(self, system: Any) -> Mapping[str, Any]:
        """Everything needed to rebuild and resume `system`: primitives and tensors only."""
        ...

    def rebuild(self, state: Mapping[str, Any]) -> Any:
        """A fresh system from `export_state` output (as `torch.load` returned it)."""
        ...

    def step(self, system: Any) -> StepResult:
        """Advance `system` by one training step (for the reference: one PPO update)."""
        ...


class ReferenceSubject:
    """The bundled morphogenetic model under its PPO controller.

    `build` drives every slot of a `rows x cols` grid to the stage (real germination,
    training and blending), hands the model to a PPO `Trainer` and runs one warm-up batch in
    which the controller only waits; the exported state is the trainer's `TrainingState`,
    and a step is one PPO update.
    """

    supports_grids = True

    def __init__(self, host: str = "cnn", *, blend_epochs: int = 10) -> None:
        from pytest_ckpt.reference.hosts import HOSTS

        if host not in HOSTS:
            raise ValueError(f"unknown host {host!r}; expected one of {', '.join(HOSTS)}")
        self.host = host
        self.blend_epochs = blend_epochs
        self.name = f"reference-{host}"

    def stages(self) -> Sequence[str]:
        return LIFECYCLE_STAGES

    def build(self, *, grid: Grid, stage: str, seed: int) -> Any:
        """Seeds the global torch and python RNGs too: the TrainingState captures them, so a
        build must not depend on whatever ran earlier in the process."""
        import random

        import torch

        from pytest_ckpt.reference.lifecycle import SeedStage
        from pytest_ckpt.reference.ppo import Operation
        from pytest_ckpt.reference.scenarios import build_at_stage
        from pytest_ckpt.reference.slots import SlotConfig
        from pytest_ckpt.reference.trainer import Trainer

        model = build_at_stage(
            self.host,
            SlotConfig.grid(*grid),
            SeedStage.from_name(stage),
            seed=seed,
            blend_epochs=self.blend_epochs,
        )
        torch.manual_seed(seed)
        random.seed(seed)
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
        from pytest_ckpt.reference.trainer import Trainer

        return Trainer.from_state_dict(state)

    def step(self, system: Any) -> StepResult:
        import dataclasses

        stats = system.run_update()
        events = [event.to_dict() for event in system.telemetry.drain()]
        return StepResult(metrics=dataclasses.asdict(stats), telemetry=events)


class ModuleSubject:
    """A plain `nn.Module` + optimizer, for projects without seed stages.

        ModuleSubject(lambda: MyNet(), make_batch=lambda g: (torch.randn(8, 4, generator=g),
                                                              torch.randn(8, 1, generator=g)))

    Its only stage is TRAINING (the model after `warmup_steps` steps); grids do not apply.
    A step is one optimizer step on `make_batch(generator)` with `loss_fn`.
    """

    supports_grids = False

    def __init__(
        self,
        make_model: Callable[[], Any],
        *,
        make_batch: Callable[[Any], tuple[Any, Any]],
        make_optimizer: Callable[[Any], Any] | None = None,
        loss_fn: Callable[[Any, Any], Any] | None = None,
        warmup_steps: int = 2,
        name: str = "module",
    ) -> None:
        self.make_model = make_model
        self.make_batch = make_batch
        self.make_optimizer = make_optimizer
        self.loss_fn = loss_fn
        self.warmup_steps = warmup_steps
        self.name = name

    def stages(self) -> Sequence[str]:
        return ("TRAINING",)

    def _fresh(
        self, seed: int, *, parallelize: Callable[[Any], Any] | None = None
    ) -> dict[str, Any]:
        """A system before any step. `parallelize` (pytest_ckpt.distributed) shards the model
        before the optimizer is made from its parameters."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.make_model()
        if parallelize is not None:
            model = parallelize(model)
        params = model.parameters()
        optimizer = (
            self.make_optimizer(params)
            if self.make_optimizer is not None
            else torch.optim.Adam(params, lr=1e-3)
        )
        return {
            "model": model,
            "optimizer": optimizer,
            "generator": torch.Generator().manual_seed(seed),
            "steps": 0,
            "seed": seed,
        }

    def build(self, *, grid: Grid, stage: str, seed: int) -> Any:
        import torch

        if stage != "TRAINING":
            raise ValueError(f"ModuleSubject has only the TRAINING stage, not {stage!r}")
        system = self._fresh(seed)
        torch.manual_seed(seed)  # the state captures the global RNG: do not inherit history
        for _ in range(self.warmup_steps):
            self.step(system)
        return system

    def export_state(self, system: Any) -> Mapping[str, Any]:
        import torch

        return {
            "model": system["model"].state_dict(),
            "optimizer": system["optimizer"].state_dict(),
            "generator": system["generator"].get_state(),
            "torch_rng": torch.get_rng_state(),
            "steps": system["steps"],
            "seed": system["seed"],
        }

    def rebuild(self, state: Mapping[str, Any]) -> Any:
        import torch

        system = self._fresh(state["seed"])
        system["model"].load_state_dict(state["model"], strict=True)
        system["optimizer"].load_state_dict(state["optimizer"])
        system["generator"].set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        system["steps"] = state["steps"]
        return system

    def step(self, system: Any, *, loss_weight: float = 1.0) -> StepResult:
        """`loss_weight` scales what is back-propagated, not the reported loss (under
        pytest_ckpt.distributed only rank 0's batch contributes a gradient)."""
        import torch.nn.functional as F

        model, optimizer = system["model"], system["optimizer"]
        inputs, targets = self.make_batch(system["generator"])
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = (self.loss_fn or F.mse_loss)(model(inputs), targets)
        (loss if loss_weight == 1.0 else loss * loss_weight).backward()
        optimizer.step()
        system["steps"] += 1
        value = float(loss.detach())
        return StepResult(
            metrics={"loss": value}, telemetry=[{"event": "step", "step": system["steps"]}]
        )


def load_subject(spec: str) -> Subject:
    """Import `package.module:factory` and call it (or take it as is, if already a subject).

    Raises ValueError with a one-line reason: bad form, import failure, missing attribute,
    or an object that does not satisfy the `Subject` protocol.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{spec!r} is not of the form 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import module {module_name!r}: {err}") from None
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None
    subject = target if isinstance(target, Subject) else target()
    check_subject(subject, origin=spec)
    return subject


def check_subject(subject: Any, *, origin: str) -> None:
    if not isinstance(subject, Subject):
        wanted = "name, supports_grids, stages(), build(), export_state(), rebuild(), step()"
        raise ValueError(
            f"{origin} gave a {type(subject).__name__}, which is not a pytest_ckpt.Subject "
            f"(needs {wanted})"
        )
    unknown = [s for s in subject.stages() if s not in LIFECYCLE_STAGES]
    if unknown:
        raise ValueError(
            f"{origin}: stages {unknown} are not lifecycle stages ({', '.join(LIFECYCLE_STAGES)})"
        )
