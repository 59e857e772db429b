"""What a value of each `--ckpt-*` option may be: argparse type functions that validate and
normalise strings (plain strings travel to xdist workers), raising
`argparse.ArgumentTypeError` that lists the valid forms. `options` turns them into
`CkptOptions`."""

from __future__ import annotations

import argparse
import re

from pytest_ckpt.plugin.snapshot_compare import ToleranceRule
from pytest_ckpt.subject import STAGE_NAME
from pytest_ckpt.vocabulary import GRID

FLOAT_MODES = ("exact", "tolerant")
# The 0.1 name of "tolerant": rounded text, which flipped at rounding boundaries across CPUs.
OLD_FLOAT_MODES = {"rounded": "tolerant"}


# ---- --ckpt-world-sizes: SAVE:LOAD pairs, comma separated (no torch here) ---------------

MAX_RANKS = 64  # local processes; more is a typo, not a test
_WORLD_SIZE_PAIR = re.compile(r"([1-9][0-9]*):([1-9][0-9]*)")
WORLD_SIZE_FORMS = "SAVE:LOAD pairs of positive ints, comma separated, e.g. 2:1,2:2,1:2 (or none)"


def world_sizes_value(text: str) -> str:
    """'2:1, 1:2' -> '2:1,1:2'; '' or 'none' -> 'none'. Raises ArgumentTypeError."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if parts in ([], ["none"]):
        return "none"
    bad = [part for part in parts if _WORLD_SIZE_PAIR.fullmatch(part) is None]
    if bad:
        raise argparse.ArgumentTypeError(
            f"invalid world-size pair(s) {', '.join(bad)}; {WORLD_SIZE_FORMS}"
        )
    big = [p for p in parts if max(map(int, p.split(":"))) > MAX_RANKS]
    if big:
        raise argparse.ArgumentTypeError(
            f"world size(s) {', '.join(big)} above {MAX_RANKS} ranks; {WORLD_SIZE_FORMS}"
        )
    return ",".join(dict.fromkeys(parts))


def parse_world_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """The (save, load) pairs of a value, validated as `world_sizes_value` does."""
    normal = world_sizes_value(text)
    if normal == "none":
        return ()
    return tuple((int(save), int(load)) for save, load in (p.split(":") for p in normal.split(",")))


def pair_id(pair: tuple[int, int]) -> str:
    """The pair as it appears in an item id: `ckpt::world_size[TRAINING-1x1-2:1]`."""
    return f"{pair[0]}:{pair[1]}"


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def stages_value(text: str) -> str:
    """'default', 'all' or a comma list of stage names. Which names exist is the subject's to
    say (lifecycle stages, or a plain model's own phases): the session checks them."""
    parts = split_list(text)
    if parts in (["all"], ["default"]):
        return parts[0]
    if not parts:
        raise argparse.ArgumentTypeError("no stages given; use stage names or 'all'")
    bad = [p for p in parts if STAGE_NAME.fullmatch(p) is None or p in ("all", "default")]
    if bad:
        raise argparse.ArgumentTypeError(
            f"invalid stage name(s) {', '.join(bad)}: stage names are words like BLENDING or "
            "WARMUP (letters, digits, _); or all"
        )
    return ",".join(dict.fromkeys(parts))


def grids_value(text: str) -> str:
    """A comma list of ROWSxCOLS grids, e.g. 1x1,2x2."""
    parts = split_list(text)
    if not parts:
        raise argparse.ArgumentTypeError("no grids given; e.g. 1x1,2x2")
    bad = [p for p in parts if GRID.fullmatch(p) is None]
    if bad:
        raise argparse.ArgumentTypeError(
            f"invalid grid(s) {', '.join(bad)}; expected ROWSxCOLS with positive ints, e.g. 2x2"
        )
    return ",".join(dict.fromkeys(parts))


def steps_value(text: str) -> str:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return str(int(text))


def subject_value(text: str) -> str:
    module, sep, attribute = text.partition(":")
    if not sep or not module or not attribute:
        raise argparse.ArgumentTypeError(f"expected 'package.module:factory', got {text!r}")
    return text


def float_mode_value(text: str) -> str:
    if text not in FLOAT_MODES and text not in OLD_FLOAT_MODES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(FLOAT_MODES)}, got {text!r}")
    return text


def tolerance_value(text: str) -> str:
    """A finite number >= 0 (a relative or absolute tolerance)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return text.strip()


def resume_tolerance_value(text: str) -> str:
    """A resume tolerance profile name: exact (the default), strict, standard or loose."""
    from pytest_ckpt.checks.tolerance import profile_names

    if text.strip() not in profile_names():
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(profile_names())}, got {text!r}"
        )
    return text.strip()


def tolerance_rules_value(lines: list[str]) -> tuple[str, ...]:
    """ini lines `PATTERN: rtol=X, atol=Y` or `PATTERN: unchecked`, each validated."""
    rules = tuple(line.strip() for line in lines if line.strip())
    for rule in rules:
        try:
            ToleranceRule.parse(rule)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return rules
