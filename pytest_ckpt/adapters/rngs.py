"""The process-wide RNGs a training step may read (torch's, Python's `random`, numpy's
`np.random`), captured as primitives and tensors so `torch.load(weights_only=True)` loads them.

numpy's legacy global state is a tuple holding a uint32 array, which weights_only refuses; it
is kept as its parts, the key array as an int64 tensor. numpy is captured when it is
installed (importing torch imports it anyway), so an export holds the same keys whether or not
the project's code has imported numpy yet.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
from collections.abc import Iterator, Mapping
from typing import Any


def numpy_module() -> Any:
    """numpy, or None where it is not installed."""
    if importlib.util.find_spec("numpy") is None:
        return None
    import numpy

    return numpy


def global_rng_state() -> dict[str, Any]:
    """torch's, Python's and (where installed) numpy's global RNG states."""
    import torch

    version, words, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch_rng": torch.get_rng_state(),
        "python_rng": {
            "version": version,
            "words": torch.tensor(words, dtype=torch.int64),  # one digest, not 625 numbers
            "gauss": gauss,
        },
    }
    numpy = numpy_module()
    if numpy is not None:
        kind, keys, pos, has_gauss, cached = numpy.random.get_state(legacy=True)
        state["numpy_rng"] = {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(numpy.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    return state


def restore_global_rng_state(state: Mapping[str, Any]) -> None:
    """Set the global RNGs from `global_rng_state()` output (as torch.load returned it)."""
    import torch

    torch.set_rng_state(state["torch_rng"])
    python = state["python_rng"]
    random.setstate(
        (python["version"], tuple(int(w) for w in python["words"].tolist()), python["gauss"])
    )
    if state.get("numpy_rng") is not None:
        restore_numpy_rng(state["numpy_rng"])


def restore_numpy_rng(saved: Mapping[str, Any]) -> None:
    """Set numpy's global RNG from the `numpy_rng` part of `global_rng_state()`."""
    numpy = numpy_module()
    if numpy is None:
        raise ImportError("the checkpoint holds numpy's RNG state; pip install numpy")
    keys = saved["keys"].numpy().astype(numpy.uint32)
    numpy.random.set_state(
        (saved["kind"], keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"])
    )


def seed_global_rngs(seed: int) -> None:
    """Seed every global RNG `global_rng_state` captures: a build must not inherit history."""
    import torch

    torch.manual_seed(seed)
    random.seed(seed)
    numpy = numpy_module()
    if numpy is not None:
        numpy.random.seed(seed % 2**32)


@contextlib.contextmanager
def isolated_global_rngs(seed: int) -> Iterator[None]:
    """Every global RNG seeded with `seed` inside, and put back as it was on leaving: code run
    inside neither depends on nor changes the RNG history of the run around it."""
    saved = global_rng_state()
    try:
        seed_global_rngs(seed)
        yield
    finally:
        restore_global_rng_state(saved)
