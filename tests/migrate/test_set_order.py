"""A set becomes a list whose order does not depend on the process: a set of strings is
iterated in an order set by PYTHONHASHSEED, so the saver's pickle, a static migration and a
`--trust` migration (which iterates the live set) would each give their own order. Items of
one sortable type are sorted; any other set keeps the order it was read in."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from pytest_ckpt.migrate.trusted import to_primitives
from pytest_ckpt.migrate.workflow import migrate_file
from tests.audit.test_hostile import PROTO2, write_zip
from tests.audit.test_torch_checks import call, uni

WORDS = [f"w{i:02d}" for i in range(24)]
MIGRATE = """
import sys, torch
from pytest_ckpt.migrate.workflow import migrate_file
for source in sys.argv[2:]:
    for trust in (False, True):
        out = f"{source}.{sys.argv[1]}.{trust}.out"
        migrate_file(source, out, trust=trust)
"""


def test_a_set_pickled_in_any_order_comes_out_sorted(tmp_path) -> None:
    """Static: the pickle's order (here reversed) is not kept; --trust: the live set's."""
    items = b"(l" + b"".join(uni(word) + b"a" for word in reversed(WORDS))
    payload = PROTO2 + b"}" + uni("tags") + call("builtins.set", items) + b"s."
    source, out = write_zip(tmp_path / "reversed.pt", payload), tmp_path / "out.pt"
    migrate_file(source, out)
    assert torch.load(out, weights_only=True) == {"tags": WORDS}
    live = {"tags": set(reversed(WORDS)), "pairs": frozenset((w, 1) for w in WORDS)}
    assert to_primitives(live) == {"tags": WORDS, "pairs": [(w, 1) for w in WORDS]}


@pytest.mark.slow
def test_sets_come_out_sorted_whatever_the_hash_seed_static_and_trusted(tmp_path) -> None:
    """Saved here (this process's order), migrated in two processes of other hash seeds."""
    state = {
        "tags": set(WORDS),
        "frozen": frozenset(WORDS),
        "pairs": {(word, 1) for word in WORDS},
    }
    sources = [str(tmp_path / "p2.pt"), str(tmp_path / "p4.pt")]
    torch.save(state, sources[0])
    torch.save(state, sources[1], pickle_protocol=4)  # EMPTY_SET and ADDITEMS
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, seed, *sources],
            env={**os.environ, "PYTHONHASHSEED": seed},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for seed in ("1", "2")
    ]  # side by side: each pays torch's import
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err.decode(errors="replace")
    outputs = sorted(tmp_path.glob("*.out"))
    assert len(outputs) == 8
    expected = {"tags": WORDS, "frozen": WORDS, "pairs": [(word, 1) for word in WORDS]}
    for out in outputs:
        assert torch.load(out, weights_only=True) == expected, out.name


def test_a_set_of_mixed_types_keeps_the_order_it_was_read_in(tmp_path) -> None:
    source, out = tmp_path / "mixed.pt", tmp_path / "out.pt"
    items = {3, "b", 1, "a", 2.5, b"z"}
    torch.save({"mixed": items}, source)
    migrate_file(source, out)
    assert torch.load(out, weights_only=True)["mixed"] == list(items)  # the pickle's order
