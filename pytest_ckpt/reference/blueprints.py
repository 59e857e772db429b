"""Seed blueprints: the small modules that germinate in a slot, per activation layout.

A blueprint maps host activations to a same-shaped delta. The registry is keyed by layout so
that a CNN slot cannot be handed a Transformer seed (or the reverse) by mistake.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn


def _conv3x3(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())


def _bottleneck(width: int) -> nn.Module:
    inner = max(width // 4, 1)
    return nn.Sequential(
        nn.Conv2d(width, inner, 1),
        nn.ReLU(),
        nn.Conv2d(inner, inner, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(inner, width, 1),
    )


def _mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))


def _lowrank(width: int) -> nn.Module:
    rank = max(width // 8, 1)
    return nn.Sequential(nn.Linear(width, rank, bias=False), nn.Linear(rank, width))


BLUEPRINTS: Mapping[str, Mapping[str, Callable[[int], nn.Module]]] = {
    "nchw": {"conv3x3": _conv3x3, "bottleneck": _bottleneck},
    "ntc": {"mlp": _mlp, "lowrank": _lowrank},
}


def blueprint_names(layout: str) -> tuple[str, ...]:
    return tuple(BLUEPRINTS[layout])


def build_blueprint(name: str, *, width: int, layout: str) -> nn.Module:
    """Build seed `name` for activations of `width` channels in `layout`; ValueError if unknown."""
    if layout not in BLUEPRINTS:
        raise ValueError(f"unknown activation layout {layout!r}")
    factory = BLUEPRINTS[layout].get(name)
    if factory is None:
        raise ValueError(
            f"unknown blueprint {name!r} for {layout} slots; expected one of "
            f"{', '.join(BLUEPRINTS[layout])}"
        )
    return factory(width)
