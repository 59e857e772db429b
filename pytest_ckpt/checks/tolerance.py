"""Resumes that cannot be bit-exact: named tolerance profiles, and the noise floor they use.

On GPUs (atomics, split-K reductions) and with non-deterministic kernels, the run that
continued and the run that resumed differ by noise, so `torch.equal` is the wrong test and
"loss within 1e-5" is a guess. `--ckpt-resume-tolerance PROFILE` measures the noise instead:
the uninterrupted path runs twice (the live system and a copy of it, from the same global RNG
states), and a resumed value passes when it is

- within the profile's bound, `|continued - resumed| <= atol + rtol * |continued|`, element by
  element; and
- within `k` times the noise floor, the largest difference between the two uninterrupted
  runs for that state tensor (a tensor the two runs reproduced exactly, noise 0, such as a
  frozen layer, must then be exact). This applies where the noise floor rests on at least
  `MIN_NOISE_VALUES` values: one noisy number cannot estimate its own noise (the ratio of two
  draws of the same noise exceeds k=10 about 6% of the time, and a float32 loss that moved by
  one ulp in one run often does not in the other), so a scalar metric gets the profile's bound
  alone.

What must be exact stays exact under every profile: everything that is not a float (integer
and bool tensors, RNG states, ints, strings, sample ids), the counters named in `EXACT_KEYS`
(Adam's float `step`, a scheduler's `last_epoch`), and, in the spirit of NeMo Automodel's resume
test, the whole state before the first resumed step (a save/load is never noisy).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_ckpt.checks.compare import Difference, diff_values

MIN_NOISE_VALUES = 16
# Counters stored as floats by some libraries (torch's Adam keeps `step` as a float tensor).
EXACT_KEYS = frozenset(
    {"step", "_step_count", "last_epoch", "steps", "epoch", "global_step", "num_updates"}
)


@dataclass(slots=True, frozen=True)
class ResumeTolerance:
    """A named bound for resumed floats: `atol + rtol * |continued|`, and `k` x noise."""

    name: str
    rtol: float
    atol: float
    k: float
    meant_for: str

    def describe(self) -> str:
        return f"{self.name} (rtol={self.rtol:g}, atol={self.atol:g}, k={self.k:g} x noise)"


PROFILES = {
    p.name: p
    for p in (
        ResumeTolerance(
            "strict", 1e-6, 1e-8, 4, "fp32 with reduction-order noise only (CPU threads, cuBLAS)"
        ),
        ResumeTolerance(
            "standard", 1e-4, 1e-6, 10, "fp32/tf32 on GPUs with non-deterministic kernels"
        ),
        ResumeTolerance("loose", 1e-2, 1e-4, 100, "bf16/fp16 mixed precision, a few steps"),
    )
}
EXACT = "exact"  # the default: no profile, every value compared with torch.equal


def profile_named(name: str) -> ResumeTolerance | None:
    """The profile called `name`, None for "exact"; ValueError naming the valid ones."""
    if name == EXACT:
        return None
    if name not in PROFILES:
        raise ValueError(f"unknown resume tolerance {name!r}; use {', '.join(profile_names())}")
    return PROFILES[name]


def profile_names() -> tuple[str, ...]:
    return (EXACT, *PROFILES)


def tolerant_differences(
    continued: Any, twin: Any, resumed: Any, profile: ResumeTolerance, *, root: str
) -> list[Difference]:
    """What in `resumed` is beyond the profile's bound or k x the noise between `continued`
    and `twin` (two uninterrupted runs); structure and non-float values compared exactly."""
    ours, theirs = dict(_leaves(continued, root)), dict(_leaves(resumed, root))
    if list(ours) != list(theirs):
        return diff_values(continued, resumed, root=root)
    noise_leaves = dict(_leaves(twin, root))
    differences: list[Difference] = []
    for path, expected in ours.items():
        actual, key = theirs[path][0], expected[1]
        value = expected[0]
        if key in EXACT_KEYS or not _is_float(value) or not _is_float(actual):
            differences += diff_values(value, actual, root=path)
            continue
        other = noise_leaves.get(path)
        found = _float_difference(value, actual, None if other is None else other[0], profile)
        if found is not None:
            differences.append(Difference(path, found))
    return differences


def _float_difference(
    expected: Any, actual: Any, twin: Any, profile: ResumeTolerance
) -> str | None:
    import torch

    c, r = _as_tensor(expected), _as_tensor(actual)
    if c.shape != r.shape or c.dtype != r.dtype:
        return f"shape/dtype {list(c.shape)} {c.dtype} != {list(r.shape)} {r.dtype}"
    c, r = c.detach().cpu().double(), r.detach().cpu().double()
    both_nan = c.isnan() & r.isnan()
    gap = torch.where(both_nan, torch.zeros_like(c), (c - r).abs().nan_to_num(math.inf))
    beyond = int((gap > profile.atol + profile.rtol * c.abs()).sum())
    largest = float(gap.max()) if gap.numel() else 0.0
    if beyond:
        return (
            f"{beyond} of {c.numel()} values beyond {profile.describe()}: max abs diff "
            f"{largest:.3g}"
        )
    if c.numel() < MIN_NOISE_VALUES:
        return None
    noise = _noise(c, twin)
    if noise == 0.0 and largest > 0.0:
        return (
            f"max abs diff {largest:.3g}, but two uninterrupted runs gave exactly the same "
            "values: a value the run reproduces must resume exactly"
        )
    if largest > profile.k * noise:
        return (
            f"max abs diff {largest:.3g} > {profile.k:g} x the noise floor {noise:.3g} "
            "measured between two uninterrupted runs"
        )
    return None


def _noise(continued: Any, twin: Any) -> float:
    """The largest difference between two uninterrupted runs (inf when the twin's value is
    missing or shaped otherwise: no floor known, so only the profile's bound applies)."""
    if twin is None or not _is_float(twin):
        return math.inf
    t = _as_tensor(twin).detach().cpu().double()
    if t.shape != continued.shape:
        return math.inf
    gap = (continued - t).abs().nan_to_num(0.0)
    return float(gap.max()) if gap.numel() else 0.0


def _is_float(value: Any) -> bool:
    import torch

    if isinstance(value, torch.Tensor):
        return value.is_floating_point() and value.layout == torch.strided
    return isinstance(value, float)


def _as_tensor(value: Any) -> Any:
    import torch

    return value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=torch.float64)


def _leaves(value: Any, path: str, key: Any = None) -> Iterator[tuple[str, tuple[Any, Any]]]:
    """(path, (leaf, the key that holds it)) for every non-container value, in order; paths
    spelled as `compare.diff_values` spells them."""
    import torch

    if isinstance(value, Mapping) and not isinstance(value, torch.Tensor):
        for k, v in value.items():
            yield from _leaves(v, f"{path}[{k!r}]", k)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]", key)
    else:
        yield path, (value, key)
