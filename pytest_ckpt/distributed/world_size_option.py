"""The value of `--ckpt-world-sizes` / `ckpt_world_sizes`: SAVE:LOAD pairs, comma separated.

No torch here: the plugin validates options with the flag off, where importing torch would
cost a second. `world_sizes_value` is the argparse type (validates and normalises the plain
string that travels to xdist workers); `parse_world_sizes` gives the pairs.
"""

from __future__ import annotations

import argparse
import re

MAX_RANKS = 64  # local processes; more is a typo, not a test
_PAIR = re.compile(r"([1-9][0-9]*):([1-9][0-9]*)")
FORMS = "SAVE:LOAD pairs of positive ints, comma separated, e.g. 2:1,2:2,1:2 (or none)"


def world_sizes_value(text: str) -> str:
    """'2:1, 1:2' -> '2:1,1:2'; '' or 'none' -> 'none'. Raises ArgumentTypeError."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if parts in ([], ["none"]):
        return "none"
    bad = [part for part in parts if _PAIR.fullmatch(part) is None]
    if bad:
        raise argparse.ArgumentTypeError(f"invalid world-size pair(s) {', '.join(bad)}; {FORMS}")
    big = [p for p in parts if max(map(int, p.split(":"))) > MAX_RANKS]
    if big:
        raise argparse.ArgumentTypeError(
            f"world size(s) {', '.join(big)} above {MAX_RANKS} ranks; {FORMS}"
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
