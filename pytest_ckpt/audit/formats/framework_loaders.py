"""What the framework that wrote a recognised layout does when it reads each file back.

`torch.load(weights_only=True)` with torch's allowlist is one verdict; the framework's own
resume is another, and the one a training run meets: transformers' Trainer loads
`rng_state.pth` inside `trainer_pt_utils.safe_globals()` (numpy's RNG classes), accelerate's
`load_state` loads through `accelerate.utils.load` with `TORCH_SAFE_GLOBALS` added, timm's
`_torch_load` allows `argparse.Namespace`, Trainer never reads `training_args.bin` back, and
some readers run whatever the file holds (SB3's `VecNormalize.load` is `pickle.load`,
accelerate's `load_custom_state` is `weights_only=False`). Each reader here is a row of data
naming the call, read from the framework's source at the version in `REVIEWED`.

The allowlist is read from the installed framework where it is a plain attribute (imported
only when such a file is audited, never at our import time); else, and for timm (whose list
is a literal inside a function, and which needs torchvision to import), the reviewed list is
used and the verdict says so. The framework verdict is the auditor's verdict with that
allowlist added, exactly as `torch.serialization.safe_globals(list)` extends torch's.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from functools import cache

from pytest_ckpt.audit import Report, audit_file
from pytest_ckpt.audit.allowlist import Allowlist
from pytest_ckpt.audit.exact_allowlist import with_names

HF_TRAINER = "HF Trainer checkpoint"
ACCELERATE = "accelerate save_state"
TIMM = "timm CheckpointSaver folder"

# How a reader reads: with an allowlist (its own names added to torch's), with torch's alone,
# in a way that runs whatever the file holds, or not at all on resume.
ALLOWLIST, PLAIN, RUNS_CODE, NOT_READ = "allowlist", "plain", "runs code", "not read"
# The framework verdicts (`FrameworkVerdict.verdict`).
LOADS, REFUSES = "loads", "refuses"

# The framework versions whose source each reviewed row and list was read from.
REVIEWED = {"transformers": "5.25.0", "accelerate": "1.16.0", "timm": "1.0.31", "SB3": "2.9.2"}


@dataclass(slots=True, frozen=True)
class Reader:
    """The call that reads one file of a layout on resume, and how (`how`: ALLOWLIST,
    PLAIN, RUNS_CODE or NOT_READ; `allowlist`: the `framework_allowlist` key)."""

    framework: str
    call: str
    how: str
    allowlist: str | None = None
    note: str = ""


@dataclass(slots=True, frozen=True)
class FrameworkAllowlist:
    """The names a framework adds for its torch.load, and where they were read."""

    names: tuple[str, ...]
    source: str  # "read from the installed accelerate 1.17.0" / "reviewed against ..."


@dataclass(slots=True, frozen=True)
class FrameworkVerdict:
    """The framework's reader on one file: `verdict` LOADS, REFUSES, RUNS_CODE or
    NOT_READ; `allowlist` set for ALLOWLIST readers; `remaining` the first reason its own
    loader still refuses; `notes` what the verdict with its allowlist could not check."""

    reader: Reader
    verdict: str
    allowlist: FrameworkAllowlist | None = None
    remaining: str = ""
    notes: tuple[str, ...] = ()

    @property
    def passes(self) -> bool:
        """Does this verdict let the file pass the audit by default (not under --strict)?"""
        return self.verdict in (LOADS, NOT_READ)


_TRAINER = "transformers' Trainer"
_ACCELERATE = "accelerate's load_state"
_ACCELERATE_LOAD = "load_accelerator_state (accelerate.utils.load: weights_only=True)"
_RNG_SWALLOWED = (
    "load_state catches this failure and resumes without restoring these RNG states (logged "
    "only at info level)"
)
_READERS: dict[str, tuple[tuple[re.Pattern[str], Reader], ...]] = {
    HF_TRAINER: (
        (
            re.compile(r"rng_state(_\d+)?\.pth"),
            Reader(_TRAINER, "Trainer._load_rng_state", ALLOWLIST, "transformers"),
        ),
        (
            re.compile(r"(optimizer|scheduler|scaler)\.pt|pytorch_model\.bin"),
            Reader(_TRAINER, "Trainer's resume (torch.load, weights_only=True)", PLAIN),
        ),
        (
            re.compile(r"training_args\.bin"),
            Reader(
                _TRAINER,
                "Trainer",
                NOT_READ,
                note="Trainer writes it with torch.save(self.args) and never loads it on resume",
            ),
        ),
    ),
    ACCELERATE: (
        (
            re.compile(r"random_states_\d+\.pkl"),
            Reader(_ACCELERATE, _ACCELERATE_LOAD, ALLOWLIST, "accelerate", _RNG_SWALLOWED),
        ),
        (
            re.compile(
                r"(optimizer|scheduler|sampler|dl_state_dict|pytorch_model)(_\d+)?\.bin|scaler\.pt"
            ),
            Reader(_ACCELERATE, _ACCELERATE_LOAD, ALLOWLIST, "accelerate"),
        ),
        (
            re.compile(r"custom_checkpoint_\d+\.pkl"),
            Reader(_ACCELERATE, "load_custom_state (torch.load, weights_only=False)", RUNS_CODE),
        ),
    ),
    TIMM: (
        (
            re.compile(
                r"(checkpoint-\d+|last|model_best|recovery-\d+-\d+|milestone-\d+)\.pth\.tar"
            ),
            Reader("timm", "resume_checkpoint / load_checkpoint (_torch_load)", ALLOWLIST, "timm"),
        ),
    ),
}
# Readers known by the file name alone, wherever it lies (SB3's docs name it so).
_NAMED_FILES = (
    (
        re.compile(r"vec_?normalize.*\.pkl", re.IGNORECASE),
        Reader("stable-baselines3", "VecNormalize.load (pickle.load)", RUNS_CODE),
    ),
)
TIMM_FILES = _READERS[TIMM][0][0]


def reader_for(layout: str | None, name: str) -> Reader | None:
    """The reader of file `name` in a folder of `layout` (None: no layout recognised)."""
    for pattern, reader in (*_READERS.get(layout or "", ()), *_NAMED_FILES):
        if pattern.fullmatch(name):
            return reader
    return None


def judge(
    report: Report, reader: Reader, allowlist: Allowlist, map_location: str | None
) -> FrameworkVerdict | None:
    """The framework's verdict on an audited file, or None where it adds nothing (an
    unreadable file; a plain reader of a file torch loads)."""
    if report.error is not None:
        return None
    if reader.how in (RUNS_CODE, NOT_READ):
        return FrameworkVerdict(reader, reader.how)
    if reader.how == PLAIN or reader.allowlist is None:
        return None if report.loadable else FrameworkVerdict(reader, REFUSES)
    names = framework_allowlist(reader.allowlist)
    if report.loadable:
        return FrameworkVerdict(reader, LOADS, names)
    again = audit_file(
        report.path, allowlist=with_names(allowlist, names.names), map_location=map_location
    )
    if again.loadable:
        return FrameworkVerdict(reader, LOADS, names, notes=again.notes)
    first = again.findings[0].detail if again.findings else again.error or ""
    return FrameworkVerdict(reader, REFUSES, names, remaining=first)


@cache
def framework_allowlist(framework: str) -> FrameworkAllowlist:
    """The names `framework` adds (`transformers`, `accelerate`, `timm`): read from it where
    it is installed and exposes them, else the reviewed list."""
    installed = _installed_names(framework)
    if installed is not None:
        version = importlib.metadata.version(framework)
        return FrameworkAllowlist(installed, f"read from the installed {framework} {version}")
    return FrameworkAllowlist(
        reviewed_names(framework), f"reviewed against {framework} {REVIEWED[framework]}"
    )


def reviewed_names(framework: str) -> tuple[str, ...]:
    """The reviewed list, for the numpy installed here (numpy 2 renamed `numpy.core` to
    `numpy._core`, and torch matches the name the framework's object has at load time)."""
    if framework == "timm":
        return ("argparse.Namespace",)  # timm.models._helpers._torch_load
    core = "numpy._core" if _numpy_major() >= 2 else "numpy.core"
    numpy_rng = (f"{core}.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype")
    if framework == "accelerate":  # accelerate.utils.other.TORCH_SAFE_GLOBALS
        return (*numpy_rng, "_codecs.encode", "numpy.dtypes.UInt32DType")
    return (*numpy_rng, "numpy.dtypes.UInt32DType")  # transformers.trainer_pt_utils


def _numpy_major() -> int:
    try:
        return int(importlib.metadata.version("numpy").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return 2  # what a current framework install brings


def _installed_names(framework: str) -> tuple[str, ...] | None:
    """The installed framework's own list, by the names torch keys it under; None when it is
    not installed or keeps the list where it cannot be read (timm)."""
    if framework == "timm" or importlib.util.find_spec(framework) is None:
        return None
    try:
        if framework == "accelerate":
            objects = importlib.import_module("accelerate.utils.other").TORCH_SAFE_GLOBALS
        else:
            module = importlib.import_module("transformers.trainer_pt_utils")
            objects = module.safe_globals().safe_globals  # torch's safe_globals keeps its list
    except (ImportError, AttributeError):
        return None
    return tuple(f"{o.__module__}.{o.__qualname__}" for o in objects)
