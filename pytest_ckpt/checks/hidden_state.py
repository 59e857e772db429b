"""A copy of the state a live system holds, found by walking it, whatever its export says.

A resume differs when something the step reads was not restored: a `torch.Generator` held by
some object, the global RNGs, a buffer or attribute the step changes, the optimizer's
`param_groups`, a scheduler's position. None of them has to be in `export_state()`, so they
are found by walking the system itself: attributes, dict entries and list items, down to
torch generators, modules (their parameters, buffers and public attributes), optimizers,
schedulers, GradScalers, tensors, numpy arrays and generators (when numpy is in use) and
scalar attributes. `capture` copies each at one moment, with the global RNGs;
`checks.diagnose` compares captures taken at the start of the continued and the resumed step.

Bounded: at most `MAX_DEPTH` levels, `MAX_ITEMS` items per container and `MAX_LEAVES` leaves;
each object is visited once (the first path to it names it).
"""

from __future__ import annotations

import contextlib
import copy
import random
import sys
import types
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 10
MAX_ITEMS = 256
MAX_LEAVES = 20_000
_SCALARS = (bool, int, float, complex, str, bytes, type(None))
_SKIPPED_MODULES = ("logging", "threading", "io", "_io", "socket", "multiprocessing", "queue")
_MODULE_BOOKKEEPING = frozenset({"training", "call_super_init", "dump_patches"})


@dataclass(slots=True, frozen=True)
class Leaf:
    """One piece of live state: what it is, a copy of its value, who holds it."""

    kind: str  # generator, numpy generator, parameter, buffer, tensor, array, attribute,
    #            param_groups, optimizer state, scheduler, scaler
    value: Any
    owner: str = ""  # the holding object's class (a buffer's module, a scheduler's class)
    persistent: bool = True  # for buffers: in the module's state_dict


@dataclass(slots=True, frozen=True)
class Capture:
    leaves: dict[str, Leaf]
    rngs: dict[str, Any] = field(default_factory=dict)  # global RNG name -> state


GLOBAL_RNGS = {
    "torch": "the global torch RNG",
    "python": "python's global random module",
    "numpy": "numpy's global RNG (np.random)",
    "cuda": "the CUDA RNGs",
}


def capture(system: Any, *, root: str = "system") -> Capture:
    """Copies of everything reachable from `system`, then of the global RNG states."""
    leaves: dict[str, Leaf] = {}
    _Walker(leaves).walk(system, root, 0)
    return Capture(leaves, global_rng_states())


def global_rng_states() -> dict[str, Any]:
    """torch's and python's global RNG states; numpy's if numpy is imported; CUDA's if CUDA
    is initialized (nothing here imports numpy or initializes CUDA)."""
    import torch

    states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        states["numpy"] = numpy.random.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_global_rng_states(states: dict[str, Any]) -> None:
    """Put back what `global_rng_states` returned (in memory: numpy's state as numpy gave it)."""
    import torch

    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    if "numpy" in states:
        sys.modules["numpy"].random.set_state(states["numpy"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


class _Walker:
    def __init__(self, leaves: dict[str, Leaf]) -> None:
        import torch

        self.torch = torch
        self.numpy = sys.modules.get("numpy")
        self.leaves = leaves
        self.seen: set[int] = set()

    def add(self, path: str, leaf: Leaf) -> None:
        if len(self.leaves) < MAX_LEAVES:
            self.leaves.setdefault(path, leaf)

    def walk(self, obj: Any, path: str, depth: int) -> None:
        if depth > MAX_DEPTH or len(self.leaves) >= MAX_LEAVES:
            return
        if isinstance(obj, _SCALARS):
            self.add(path, Leaf("attribute", obj, type(obj).__name__))
            return
        if id(obj) in self.seen or opaque(obj):
            return
        self.seen.add(id(obj))
        if self._torch_leaf(obj, path) or self._numpy_leaf(obj, path):
            return
        torch = self.torch
        if isinstance(obj, torch.nn.Module):
            self._module(obj, path, depth)
        elif isinstance(obj, Mapping):
            for key, value in list(obj.items())[:MAX_ITEMS]:
                self.walk(value, f"{path}[{key!r}]", depth + 1)
        elif isinstance(obj, (list, tuple, deque)):
            for i, value in enumerate(list(obj)[:MAX_ITEMS]):
                self.walk(value, f"{path}[{i}]", depth + 1)
        else:
            for name, value in instance_attributes(obj):
                self.walk(value, f"{path}.{name}", depth + 1)

    def _torch_leaf(self, obj: Any, path: str) -> bool:
        torch = self.torch
        owner = type(obj).__name__
        if isinstance(obj, torch.Generator):
            self.add(path, Leaf("generator", obj.get_state(), "torch.Generator"))
        elif isinstance(obj, torch.Tensor):
            self.add(path, Leaf("tensor", obj.detach().clone(), owner))
        elif isinstance(obj, torch.optim.Optimizer):
            groups = [{k: v for k, v in g.items() if k != "params"} for g in obj.param_groups]
            self.add(f"{path}.param_groups", Leaf("param_groups", copy.deepcopy(groups), owner))
            state = copy.deepcopy(obj.state_dict()["state"])
            self.add(f"{path}.state", Leaf("optimizer state", state, owner))
        elif isinstance(
            obj, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        ):
            self.add(path, Leaf("scheduler", copy.deepcopy(obj.state_dict()), owner))
        elif isinstance(obj, torch.amp.GradScaler):
            self.add(path, Leaf("scaler", copy.deepcopy(obj.state_dict()), owner))
        else:
            return False
        return True

    def _numpy_leaf(self, obj: Any, path: str) -> bool:
        np = self.numpy
        if np is None:
            return False
        if isinstance(obj, np.ndarray):
            self.add(path, Leaf("array", obj.copy(), "ndarray"))
        elif isinstance(obj, np.random.Generator):
            state = copy.deepcopy(obj.bit_generator.state)
            self.add(path, Leaf("numpy generator", state, "numpy.random.Generator"))
        elif isinstance(obj, np.random.RandomState):
            self.add(path, Leaf("numpy generator", obj.get_state(), "numpy.random.RandomState"))
        elif isinstance(obj, np.generic):
            self.add(path, Leaf("attribute", obj.item(), type(obj).__name__))
        else:
            return False
        return True

    def _module(self, module: Any, path: str, depth: int) -> None:
        for name, parameter in module.named_parameters():
            self.add(f"{path}.{name}", Leaf("parameter", parameter.detach().clone(), "Parameter"))
        for prefix, sub in module.named_modules():
            here = f"{path}.{prefix}" if prefix else path
            self.seen.add(id(sub))
            skipped: set[str] = getattr(sub, "_non_persistent_buffers_set", set())
            for name, buffer in sub._buffers.items():
                if buffer is not None:
                    leaf = Leaf("buffer", buffer.detach().clone(), type(sub).__name__)
                    if name in skipped:
                        leaf = Leaf(leaf.kind, leaf.value, leaf.owner, persistent=False)
                    self.add(f"{here}.{name}", leaf)
            for name, value in vars(sub).items():
                if name.startswith("_") or name in _MODULE_BOOKKEEPING:
                    continue
                if not isinstance(value, self.torch.nn.Module):
                    self.walk(value, f"{here}.{name}", depth + 1)


def opaque(obj: Any) -> bool:
    """Objects whose insides are code or machinery, not training state."""
    if isinstance(
        obj,
        (type, types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType),
    ):
        return True
    module = type(obj).__module__.split(".")[0]
    return module in _SKIPPED_MODULES


def instance_attributes(obj: Any) -> list[tuple[str, Any]]:
    """An object's instance attributes (its __dict__ and __slots__), dunders left out."""
    found: dict[str, Any] = {}
    with contextlib.suppress(TypeError):
        found.update(vars(obj))
    for cls in type(obj).__mro__:
        slots = getattr(cls, "__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in found and name not in ("__dict__", "__weakref__"):
                try:
                    found[name] = getattr(obj, name)
                except AttributeError:
                    continue
    return [(k, v) for k, v in found.items() if not k.startswith("__")][:MAX_ITEMS]
