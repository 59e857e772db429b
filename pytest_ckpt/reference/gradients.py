"""Gradient health: host/seed gradient norms, non-finite gradients, isolation violations.

Norms are computed in one batched call (`torch._foreach_norm`) where this torch has it, with a
per-tensor fallback where it does not; both paths give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pytest_ckpt.reference.lifecycle import SeedStage

if TYPE_CHECKING:
    from pytest_ckpt.reference.model import MorphogeneticModel


def has_foreach_norm() -> bool:
    return hasattr(torch, "_foreach_norm")


def tensor_norms(tensors: Sequence[torch.Tensor], *, use_foreach: bool) -> list[float]:
    """L2 norm of each tensor, batched when `use_foreach`."""
    if not tensors:
        return []
    if use_foreach:
        return [float(n) for n in torch._foreach_norm(list(tensors))]
    return [float(t.norm()) for t in tensors]


@dataclass(slots=True, frozen=True)
class GradientReport:
    host_norm: float
    seed_norms: Mapping[str, float]
    non_finite: tuple[str, ...]
    isolation_violations: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return not self.non_finite and not self.isolation_violations


class GradientHealthMonitor:
    """Reads the gradients a backward pass left on a `MorphogeneticModel`."""

    def __init__(self, model: MorphogeneticModel, *, use_foreach: bool | None = None) -> None:
        if use_foreach and not has_foreach_norm():
            raise ValueError("use_foreach=True but this torch has no torch._foreach_norm")
        self.model = model
        self.use_foreach = has_foreach_norm() if use_foreach is None else use_foreach

    def report(self) -> GradientReport:
        """Norms of the current `.grad`s: the host's total and each slot's seed (gate included)."""
        groups = {"host": list(self.model.host.named_parameters(prefix="host"))}
        for slot_id, slot in self.model.slots_by_id().items():
            groups[slot_id] = list(slot.named_parameters(prefix=f"seed_slots.{slot_id}"))
        names, grads, owners = [], [], []
        for owner, params in groups.items():
            for name, param in params:
                if param.grad is not None:
                    names.append(name)
                    grads.append(param.grad)
                    owners.append(owner)
        norms = tensor_norms(grads, use_foreach=self.use_foreach)
        totals: dict[str, float] = {owner: 0.0 for owner in groups}
        non_finite = []
        for name, owner, norm in zip(names, owners, norms, strict=True):
            if not math.isfinite(norm):
                non_finite.append(name)
            totals[owner] += norm * norm
        host_norm = math.sqrt(totals.pop("host"))
        seed_norms = {slot_id: math.sqrt(total) for slot_id, total in totals.items()}
        return GradientReport(host_norm, seed_norms, tuple(non_finite))

    def probe_isolation(self, x: torch.Tensor) -> tuple[str, ...]:
        """Slot ids whose isolated seed output would put gradient into the host.

        For each seed that should be isolated (TRAINING, or BLENDING with isolation on), take the
        gradient of its output alone with respect to the host's parameters; any non-zero value
        is a violation. Leaves `.grad` and BatchNorm statistics untouched (runs in eval mode).
        """
        isolated = {
            slot_id: slot.seed
            for slot_id, slot in self.model.slots_by_id().items()
            if slot.seed is not None
            and slot.state is not None
            and slot.state.isolate_gradients
            and slot.stage in (SeedStage.TRAINING, SeedStage.BLENDING)
        }
        if not isolated:
            return ()
        outputs: dict[str, torch.Tensor] = {}
        handles = [
            seed.register_forward_hook(
                lambda _m, _i, out, slot_id=slot_id: outputs.__setitem__(slot_id, out)
            )
            for slot_id, seed in isolated.items()
        ]
        was_training = self.model.training
        self.model.eval()
        try:
            self.model(x)
        finally:
            self.model.train(was_training)
            for handle in handles:
                handle.remove()
        host_params = [p for p in self.model.host.parameters() if p.requires_grad]
        violations = []
        for slot_id, out in outputs.items():
            grads = torch.autograd.grad(
                out.sum(), host_params, allow_unused=True, retain_graph=True
            )
            if any(g is not None and bool(g.ne(0).any()) for g in grads):
                violations.append(slot_id)
        return tuple(violations)
