"""The `Subject` protocol: how a project's own model plugs into the round-trip harness.

A subject builds a live system for a stage (and, if it has seed slots, a slot grid) and a
seed; exports its state as primitives and tensors; rebuilds a fresh system from such a state;
and takes one training step, returning metrics and telemetry payloads. The harness does the
rest: save to a real file, `torch.load(weights_only=True)`, rebuild, compare, resume, snapshot.

Stages are the subject's own names: the morphogenetic lifecycle (GERMINATED, BLENDING, ...) for
a growing model, training phases (WARMUP, DECAY) for a plain one. `ModuleSubject`
(`pytest_ckpt.adapters.module`) adapts a plain `nn.Module` + optimizer in one line; the
default subject, the bundled morphogenetic system under its PPO controller, is
`pytest_ckpt.reference.subject.ReferenceSubject`: a user of this protocol like any other.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pytest_ckpt.vocabulary import Grid

# The bundled reference system is a user of the core: named here only by this string.
DEFAULT_SUBJECT = "pytest_ckpt.reference.subject:ReferenceSubject"
STAGE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED_STAGES = ("all", "default")  # words --ckpt-stages gives a meaning of its own


@dataclass(slots=True, frozen=True)
class StepResult:
    """What one step produced: scalar metrics and telemetry payloads (primitives only), and
    optionally `samples`, the ids (ints or strings, e.g. dataset indices) of the samples the
    step consumed, in order. A data position that a checkpoint loses rarely shows in the
    metrics (a loss hardly depends on which batch was read), so the resume check compares the
    samples the continued and the resumed runs read, exactly, before anything else.
    """

    metrics: Mapping[str, Any]
    telemetry: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    samples: Sequence[int | str] | None = None


@runtime_checkable
class Subject(Protocol):
    """What the harness needs from a project. `name` labels reports and snapshots.

    Optional members, used when present:

    - `check_grid(grid)`: raise ValueError (with the reason) for a slot grid the subject cannot
      be built on, so `--ckpt-grids` refuses it as a usage error before anything runs.
    - `probe(system)`: the system's output on a fixed batch (tensors, no side effects); the
      round trip then also compares the live and the rebuilt system's outputs, which catches
      what a state comparison cannot see (weights dropped under `strict=False` from a state
      that never held them, the wrong module rebuilt, a buffer left out of the state).
    - `snapshot_tolerances`: `PATTERN: rtol=X, atol=Y` or `PATTERN: unchecked` lines for the
      matrix snapshots (see `plugin.snapshot_compare`).
    - `resume_steps`: how many steps the resume check continues and resumes for this subject
      (an int >= 1) unless `--ckpt-resume-steps` says otherwise; an episodic subject sets it
      so that an episode ends in them (an environment's RNG is drawn only at a reset).
    - `data_order_fix`: the advice a data-order failure gives (`checks.samples`) in the words
      of the subject's framework, instead of the generic "save the sampler's generator".
    """

    name: str
    supports_grids: bool

    def stages(self) -> Sequence[str]:
        """The stages this subject can be driven to, in order: its own names."""
        ...

    def build(self, *, grid: Grid, stage: str, seed: int) -> Any:
        """A live system at `stage` (on a `grid` of slots, if it has them), deterministic for
        `seed`. Take at least one training step before returning: an optimizer that never
        stepped has an empty state, and an empty state hides a checkpoint that drops it."""
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


def load_subject(spec: str) -> Subject:
    """Import `package.module:factory` and call it; a class is instantiated with no
    arguments; an object that already is a subject is taken as is.

    Raises ValueError with a one-line reason: bad form, import failure, missing attribute, a
    factory that fails or needs arguments, or an object that is not a `Subject`.
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
    if inspect.isclass(target) or not isinstance(target, Subject):
        if not callable(target):
            raise ValueError(f"{spec} is a {type(target).__name__}, not a factory or a subject")
        try:
            inspect.signature(target).bind()
        except TypeError as err:
            raise ValueError(f"{spec} must be callable with no arguments: {err}") from None
        except ValueError:
            pass  # no signature to read (a builtin): let the call say
        try:
            subject = target()
        except Exception as err:  # the project's factory: said in one line, with its cause
            raise ValueError(f"{spec}() raised {type(err).__name__}: {err}") from err
    else:
        subject = target
    return check_subject(subject, origin=spec)


def check_subject(subject: object, *, origin: str) -> Subject:
    """`subject` as a Subject; ValueError unless it is a Subject instance with usable stage
    names."""
    if inspect.isclass(subject) or not isinstance(subject, Subject):
        wanted = "name, supports_grids, stages(), build(), export_state(), rebuild(), step()"
        what = (
            f"the class {subject.__name__}"
            if inspect.isclass(subject)
            else "a " + (type(subject).__name__)
        )
        raise ValueError(
            f"{origin} gave {what}, which is not a pytest_ckpt.Subject (needs {wanted})"
        )
    stages = list(subject.stages())
    if not stages:
        raise ValueError(f"{origin}: subject {subject.name} has no stages")
    bad = [s for s in stages if not isinstance(s, str) or STAGE_NAME.fullmatch(s) is None]
    bad += [s for s in stages if s in _RESERVED_STAGES]
    if bad:
        raise ValueError(
            f"{origin}: stage name(s) {bad!r} cannot be used: stages are words like WARMUP or "
            f"BLENDING (letters, digits, _), not {' or '.join(_RESERVED_STAGES)}"
        )
    if len(set(stages)) != len(stages):
        raise ValueError(f"{origin}: subject {subject.name} lists a stage twice: {stages}")
    return subject
