"""The `--ckpt-*` options: parsed and validated into one frozen `CkptOptions`.

argparse type functions only validate and normalise strings (plain strings travel to xdist
workers); `resolve_options` turns the command line and ini values into `CkptOptions` and
raises `pytest.UsageError` naming the option for anything wrong.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pytest_ckpt.plugin.option_values import (
    OLD_FLOAT_MODES,
    float_mode_value,
    grids_value,
    parse_world_sizes,
    resume_tolerance_value,
    split_list,
    stages_value,
    steps_value,
    subject_value,
    tolerance_rules_value,
    tolerance_value,
    world_sizes_value,
)
from pytest_ckpt.subject import DEFAULT_SUBJECT
from pytest_ckpt.vocabulary import DEFAULT_GRIDS, DEFAULT_STAGES, Grid, parse_grid

if TYPE_CHECKING:
    import pytest


@dataclass(slots=True, frozen=True)
class CkptOptions:
    enabled: bool
    stages: tuple[str, ...] | Literal["all", "default"]  # "all" / "default": per subject
    grids: tuple[Grid, ...]
    grids_chosen: bool  # given on the command line or in the ini (not the default)
    resume_steps: int
    subject: str
    report: str | None
    snapshot_floats: str
    snapshot_rtol: float
    snapshot_atol: float
    snapshot_tolerances: tuple[str, ...]  # ToleranceRule texts (plain strings travel to xdist)
    world_sizes: tuple[tuple[int, int], ...] = ()  # (save, load) rank counts; () for none
    resume_tolerance: str = "exact"  # a checks.tolerance profile name
    resume_steps_chosen: bool = False  # given on the command line or in the ini

    def resume_steps_for(self, subject: Any) -> int:
        """The resume check's steps for `subject`: `--ckpt-resume-steps` (or the ini) when
        given, else the subject's own `resume_steps` when it declares one (an episodic
        subject whose environment RNG is drawn only when an episode ends), else the default.

        Raises SubjectError for a declared value that is not an int >= 1."""
        declared = getattr(subject, "resume_steps", None)
        if self.resume_steps_chosen or declared is None:
            return self.resume_steps
        if isinstance(declared, bool) or not isinstance(declared, int) or declared < 1:
            from pytest_ckpt.errors import SubjectError

            raise SubjectError(
                f"subject {subject.name} declares resume_steps = {declared!r}: give an int >= 1 "
                "(the steps its resume check continues and resumes)"
            )
        return declared

    def stage_list(self, reachable: tuple[str, ...]) -> tuple[str, ...]:
        """The stages to test for a subject that can reach `reachable`.

        "default" is GERMINATED, BLENDING, PROBATIONARY where the subject reaches them (all
        it reaches if none), so a plain-module subject works without configuration.
        """
        if self.stages == "all":
            return reachable
        if self.stages == "default":
            return tuple(s for s in DEFAULT_STAGES if s in reachable) or reachable
        return self.stages


@dataclass(slots=True, frozen=True)
class OptionSpec:
    """One `--ckpt-*` option; its dest and its ini twin are both `name`."""

    flag: str
    name: str
    validate: Callable[[str], str]
    default: str
    help: str


OPTIONS = (
    OptionSpec(
        "--ckpt-stages",
        "ckpt_stages",
        stages_value,
        "default",
        "seed stages to test, comma separated, or 'all'; default: "
        + ",".join(DEFAULT_STAGES)
        + " where the subject reaches them",
    ),
    OptionSpec(
        "--ckpt-grids",
        "ckpt_grids",
        grids_value,
        DEFAULT_GRIDS,
        f"slot grids ROWSxCOLS, comma separated (default: {DEFAULT_GRIDS})",
    ),
    OptionSpec(
        "--ckpt-resume-steps",
        "ckpt_resume_steps",
        steps_value,
        "1",
        "steps to continue and to resume in the resume check (default: 1)",
    ),
    OptionSpec(
        "--ckpt-subject",
        "ckpt_subject",
        subject_value,
        DEFAULT_SUBJECT,
        "the system under test, 'package.module:factory' (default: the reference system)",
    ),
    OptionSpec(
        "--ckpt-report", "ckpt_report", str, "", "also write a markdown report to this path"
    ),
    OptionSpec(
        "--ckpt-snapshot-floats",
        "ckpt_snapshot_floats",
        float_mode_value,
        "tolerant",
        "floats in snapshots: 'tolerant' (default; compared with rtol/atol, so committed "
        "snapshots hold on any CPU) or 'exact' (digests and full text; one machine only)",
    ),
    OptionSpec(
        "--ckpt-world-sizes",
        "ckpt_world_sizes",
        world_sizes_value,
        "none",
        "also check resume across world sizes: SAVE:LOAD pairs, e.g. 2:1,1:2 (FSDP2 or DDP on "
        "gloo, CPU processes on localhost; default: none)",
    ),
    OptionSpec(
        "--ckpt-resume-tolerance",
        "ckpt_resume_tolerance",
        resume_tolerance_value,
        "exact",
        "how resumed floats are compared: 'exact' (default) or a profile, strict, standard or "
        "loose, that measures the noise between two uninterrupted runs (see the README)",
    ),
    OptionSpec(
        "--ckpt-snapshot-rtol",
        "ckpt_snapshot_rtol",
        tolerance_value,
        "1e-3",
        "relative tolerance for floats in tolerant snapshots (default: 1e-3)",
    ),
    OptionSpec(
        "--ckpt-snapshot-atol",
        "ckpt_snapshot_atol",
        tolerance_value,
        "1e-6",
        "absolute tolerance for floats in tolerant snapshots (default: 1e-6)",
    ),
)
TOLERANCES_INI = "ckpt_snapshot_tolerances"


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("ckpt", "checkpoint round trips (pytest-ckpt)")
    group.addoption(
        "--ckpt-roundtrip",
        action="store_true",
        dest="ckpt_roundtrip",
        default=None,
        help="add the generated round-trip / resume / snapshot matrix to the session",
    )
    parser.addini("ckpt_roundtrip", "turn the generated matrix on", type="bool", default=False)
    for spec in OPTIONS:
        group.addoption(spec.flag, dest=spec.name, type=spec.validate, default=None, help=spec.help)
        parser.addini(spec.name, spec.help, default=spec.default)
    parser.addini(
        TOLERANCES_INI,
        "per-field tolerances for snapshots, one per line: 'PATTERN: rtol=X, atol=Y' for floats, "
        "or 'PATTERN: unchecked' to mask any value there (a version string, a timestamp); "
        "PATTERN is a glob over the dotted path, e.g. state.config.transformers_version",
        type="linelist",
        default=[],
    )


def resolve_options(config: pytest.Config) -> CkptOptions:
    """Command line over ini over defaults; any bad value -> pytest.UsageError naming it."""
    import pytest

    values: dict[str, str] = {}
    for spec in OPTIONS:
        raw = config.getoption(spec.name)
        if raw is None:
            try:
                raw = spec.validate(str(config.getini(spec.name)))
            except argparse.ArgumentTypeError as err:
                raise pytest.UsageError(f"ini option {spec.name} ({spec.flag}): {err}") from None
        values[spec.name] = raw
    enabled = config.getoption("ckpt_roundtrip")
    if enabled is None:
        enabled = bool(config.getini("ckpt_roundtrip"))
    try:
        rules = tolerance_rules_value(config.getini(TOLERANCES_INI))
    except argparse.ArgumentTypeError as err:
        raise pytest.UsageError(f"ini option {TOLERANCES_INI}: {err}") from None
    float_mode = values["ckpt_snapshot_floats"]
    if float_mode in OLD_FLOAT_MODES:
        config.issue_config_time_warning(
            pytest.PytestDeprecationWarning(
                f"ckpt_snapshot_floats = {float_mode!r} is now "
                f"{OLD_FLOAT_MODES[float_mode]!r}: floats are compared with rtol/atol"
            ),
            stacklevel=2,
        )
        float_mode = OLD_FLOAT_MODES[float_mode]
    raw_stages = values["ckpt_stages"]
    stages = _stages_choice(raw_stages)
    grids = tuple(parse_grid(g) for g in split_list(values["ckpt_grids"]))
    return CkptOptions(
        enabled=enabled,
        stages=stages,
        grids=grids,
        grids_chosen=config.getoption("ckpt_grids") is not None
        or values["ckpt_grids"] != DEFAULT_GRIDS,
        resume_steps=int(values["ckpt_resume_steps"]),
        subject=values["ckpt_subject"],
        report=values["ckpt_report"] or None,
        snapshot_floats=float_mode,
        snapshot_rtol=float(values["ckpt_snapshot_rtol"]),
        snapshot_atol=float(values["ckpt_snapshot_atol"]),
        snapshot_tolerances=rules,
        world_sizes=parse_world_sizes(values["ckpt_world_sizes"]),
        resume_tolerance=values["ckpt_resume_tolerance"],
        resume_steps_chosen=config.getoption("ckpt_resume_steps") is not None
        or values["ckpt_resume_steps"] != "1",
    )


def check_report_option_form(config: pytest.Config) -> None:
    """`--ckpt-report PATH` (space form) with an existing PATH: a usage error if that PATH
    moved pytest's rootdir or configuration file.

    pytest chooses its rootdir and ini file from the command line's paths before it loads
    plugins, so it cannot know that PATH is this option's value: an existing PATH outside the
    project is taken for a test path, and the project's configuration is lost silently. The
    `--ckpt-report=PATH` form is one argument and never mistaken. Nothing a plugin does can
    make the space form safe, so it is detected: the rootdir and ini file are chosen again
    without PATH (with pytest's own function) and compared with the ones this run has.
    """
    import itertools
    import os
    import shlex
    from pathlib import Path

    import pytest

    if hasattr(config, "workerinput"):
        return
    args = [*shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    args += [str(arg) for arg in config.invocation_params.args]
    for flag, value in itertools.pairwise(args):
        if flag != "--ckpt-report" or not Path(config.invocation_params.dir, value).exists():
            continue
        if _setup_without_report_path(config) != (config.rootpath, config.inipath):
            raise pytest.UsageError(
                f"--ckpt-report {value}: pytest took the existing path {value} for a test path "
                "when it chose the rootdir and configuration file (before plugin options are "
                f"known), so this run lost the project's configuration (rootdir "
                f"{config.rootpath}, config file {config.inipath or 'none'}). "
                f"Write --ckpt-report={value}"
            )


def _setup_without_report_path(config: pytest.Config) -> tuple[object, object]:
    """(rootdir, ini file) as pytest would choose them without the report path; unknowable
    (pytest's private function changed) -> a value that never matches: the usage error."""
    import inspect

    try:
        from _pytest.config.findpaths import determine_setup
    except ImportError:
        return (None, None)
    from_args = config.args_source == config.ArgsSource.ARGS
    known = {
        "inifile": config.option.inifilename,
        "override_ini": config.option.override_ini,
        "args": [str(arg) for arg in config.args] if from_args else [],
        "rootdir_cmd_arg": config.option.rootdir or None,
        "invocation_dir": config.invocation_params.dir,
    }
    try:
        parameters = inspect.signature(determine_setup).parameters
        found = determine_setup(**{k: v for k, v in known.items() if k in parameters})
    except (TypeError, ValueError):
        return (None, None)
    return (found[0], found[1])


def _stages_choice(raw: str) -> tuple[str, ...] | Literal["all", "default"]:
    """`--ckpt-stages` as CkptOptions holds it: a keyword, or the stage names."""
    if raw == "all":
        return "all"
    if raw == "default":
        return "default"
    return tuple(split_list(raw))
