"""Classes the migrate tests pickle (importable, so the originals load in a subprocess)."""

from __future__ import annotations

import collections
import dataclasses

import torch

Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class TreeNode:
    """A config node pointing back at its parent, as OmegaConf's nodes do."""

    name: str
    parent: TreeNode | None = None
    children: dict = dataclasses.field(default_factory=dict)


class Net(torch.nn.Module):
    """A whole model as people pickle it: a config dict, a list attribute, submodules whose
    constructor arguments (in_features, eps, ...) are attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.config = {"width": 3, "act": "relu", "sizes": [2, 3]}
        self.tags = ["a", "b"]
        self.scale = 0.5
        self.body = torch.nn.Linear(2, 3)
        self.head = torch.nn.Sequential(torch.nn.LayerNorm(3, eps=1e-3), torch.nn.Linear(3, 1))
