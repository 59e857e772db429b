"""The DCP folder format: `.metadata` read without running code (`metadata_scan` on the
one pickle machine, `metadata_unpickle`), byte and tensor items (`items`), chunk coverage
(`chunks`), and the folder audit (`folder`). The runtime half (the safe reader used by
loads, launch helpers, the world-size check) is `pytest_ckpt.distributed`.
"""

from __future__ import annotations

import os
import re

METADATA = ".metadata"
SHARD_SUFFIX = ".distcp"
RANK_METADATA = re.compile(r"__\d+\.metadata")  # an uncoordinated save's, per rank


def is_member_name(name: str) -> bool:
    """Whether a file of this name is part of a DCP folder (`.metadata`, `__0.metadata`,
    `__0_0.distcp`): by its name alone, so that no other file reaches the DCP audit."""
    suffix = os.path.splitext(name)[1]
    return name == METADATA or suffix == SHARD_SUFFIX or bool(RANK_METADATA.fullmatch(name))
