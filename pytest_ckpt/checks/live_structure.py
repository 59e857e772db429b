"""The structure of a live system, compared between the system and the one rebuilt from its
checkpoint: what an equal export cannot show.

A rebuild can restore every exported value and still build something else: a history deque
without its `maxlen` (it overflows only after `maxlen` entries), a `defaultdict` with another
factory or a plain dict for an `OrderedDict`, a tensor on another device or dtype, a frozen
parameter that trained, a Parameter that became a plain tensor, a module left in eval mode, a
buffer that stopped being persistent. The live system is what the subject's `build()`
returned, the rebuilt one what `rebuild()` returned; both are walked the same way (attributes,
dict entries, list/tuple/deque items, a module's parameters, buffers, submodules and public
attributes) and each place is described by its type and the parameters above. Values are not
compared here (the exports are), nor places only one side has (a cache a step fills).

Bounded: `MAX_DEPTH` levels, `MAX_ITEMS` items per container, `MAX_PLACES` places; each
object is visited once (the first path to it names it); tensors are read, never copied;
optimizers, schedulers, scalers and generators are described by their type only.
"""

from __future__ import annotations

import enum
import sys
from collections import defaultdict, deque
from collections.abc import Mapping
from typing import Any

from pytest_ckpt.checks.compare import Difference
from pytest_ckpt.checks.hidden_state import instance_attributes, opaque

MAX_DEPTH = 12
MAX_ITEMS = 256
MAX_PLACES = 20_000
_SCALARS = (bool, int, float, complex, str, bytes, type(None), enum.Enum)
_MODULE_BOOKKEEPING = frozenset({"training", "call_super_init", "dump_patches"})

Structure = dict[str, dict[str, str]]  # path -> {"type": ..., "maxlen": ..., ...}


def describe_structure(system: Any, *, root: str = "system") -> Structure:
    """Each place under `system` by path, as {field: value} strings (`type` always)."""
    walker = _StructureWalker()
    walker.walk(system, root, 0)
    return walker.places


def structure_differences(live: Structure, rebuilt: Structure) -> list[Difference]:
    """Places both systems have whose type or parameters differ: `path: maxlen 100 != None`
    (the live value first). A differing type hides the parameters of that place."""
    differences = []
    for path, fields in live.items():
        other = rebuilt.get(path)
        if other is None:
            continue
        if fields["type"] != other["type"]:
            differences.append(Difference(path, f"type {fields['type']} != {other['type']}"))
            continue
        for name, value in fields.items():
            if other.get(name) != value:
                differences.append(Difference(path, f"{name} {value} != {other.get(name)}"))
    return differences


def _type_name(obj: Any) -> str:
    kind = type(obj)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _callable_name(value: Any) -> str:
    if value is None:
        return "None"
    name = getattr(value, "__qualname__", type(value).__name__)
    return f"{getattr(value, '__module__', '?')}.{name}"


def _mode(training: bool, parent_training: bool) -> str:
    if training == parent_training:
        return "as its parent's"
    return "training under an eval parent" if training else "eval under a training parent"


class _StructureWalker:
    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.numpy = sys.modules.get("numpy")
        self.places: Structure = {}
        self.seen: set[int] = set()
        optim = torch.optim
        self.by_type_only = (
            torch.Generator,
            optim.Optimizer,
            optim.lr_scheduler.LRScheduler,
            optim.lr_scheduler.ReduceLROnPlateau,
            torch.amp.GradScaler,
        )

    def add(self, path: str, fields: dict[str, str]) -> None:
        if len(self.places) < MAX_PLACES:
            self.places.setdefault(path, fields)

    def walk(self, obj: Any, path: str, depth: int) -> None:
        if depth > MAX_DEPTH or len(self.places) >= MAX_PLACES:
            return
        if isinstance(obj, _SCALARS):
            self.add(path, {"type": _type_name(obj)})
            return
        if id(obj) in self.seen or opaque(obj):
            return
        self.seen.add(id(obj))
        torch = self.torch
        if isinstance(obj, torch.Tensor):
            self.add(path, self._tensor(obj))
        elif isinstance(obj, torch.nn.Module):
            self._module(obj, path, depth)
        elif isinstance(obj, self.by_type_only) or self._is_numpy(obj):
            self.add(path, {"type": _type_name(obj), **self._dtype(obj)})
        elif isinstance(obj, Mapping):
            fields = {"type": _type_name(obj)}
            if isinstance(obj, defaultdict):
                fields["default_factory"] = _callable_name(obj.default_factory)
            self.add(path, fields)
            for key, value in list(obj.items())[:MAX_ITEMS]:
                self.walk(value, f"{path}[{key!r}]", depth + 1)
        elif isinstance(obj, (list, tuple, deque)):
            fields = {"type": _type_name(obj)}
            if isinstance(obj, deque):
                fields["maxlen"] = str(obj.maxlen)
            self.add(path, fields)
            for i, value in enumerate(list(obj)[:MAX_ITEMS]):
                self.walk(value, f"{path}[{i}]", depth + 1)
        else:
            self.add(path, {"type": _type_name(obj)})
            for name, value in instance_attributes(obj):
                self.walk(value, f"{path}.{name}", depth + 1)

    def _tensor(self, tensor: Any) -> dict[str, str]:
        return {
            "type": _type_name(tensor),
            "dtype": str(tensor.dtype),
            "device": str(tensor.device),
            "requires_grad": str(tensor.requires_grad),
        }

    def _dtype(self, obj: Any) -> dict[str, str]:
        return {"dtype": str(obj.dtype)} if self._is_numpy(obj) else {}

    def _is_numpy(self, obj: Any) -> bool:
        np = self.numpy
        return np is not None and isinstance(obj, (np.ndarray, np.generic))

    def _module(self, module: Any, path: str, depth: int, parent: Any = None) -> None:
        """A module's mode is compared to its parent's: a step's `model.train()` sets the top
        one (a rebuilt model may start in another), not a submodule kept in eval mode."""
        fields = {"type": _type_name(module)}
        if parent is not None:
            fields["mode"] = _mode(module.training, parent.training)
        self.add(path, fields)
        for name, parameter in module._parameters.items():
            if parameter is not None:
                self.seen.add(id(parameter))
                self.add(f"{path}.{name}", self._tensor(parameter))
        skipped: set[str] = getattr(module, "_non_persistent_buffers_set", set())
        for name, buffer in module._buffers.items():
            if buffer is not None:
                self.seen.add(id(buffer))
                fields = {**self._tensor(buffer), "persistent": str(name not in skipped)}
                self.add(f"{path}.{name}", fields)
        for name, child in module._modules.items():
            if child is not None and id(child) not in self.seen and depth < MAX_DEPTH:
                self.seen.add(id(child))
                self._module(child, f"{path}.{name}", depth + 1, module)
        for name, value in vars(module).items():
            if not name.startswith("_") and name not in _MODULE_BOOKKEEPING:
                self.walk(value, f"{path}.{name}", depth + 1)
