"""The `--ckpt-world-sizes` value: SAVE:LOAD pairs, validated with an error listing the
valid forms; no torch import."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from pytest_ckpt.plugin.option_values import (
    pair_id,
    parse_world_sizes,
    world_sizes_value,
)


@pytest.mark.parametrize(
    ("text", "normal", "pairs"),
    [
        ("2:1,2:2,1:2", "2:1,2:2,1:2", ((2, 1), (2, 2), (1, 2))),
        (" 2:1 , 2:1,4:8 ", "2:1,4:8", ((2, 1), (4, 8))),
        ("", "none", ()),
        ("none", "none", ()),
    ],
)
def test_valid_values_are_normalised(text, normal, pairs) -> None:
    assert world_sizes_value(text) == normal
    assert parse_world_sizes(text) == pairs


@pytest.mark.parametrize("text", ["2-1", "2:0", "0:1", "2:", ":2", "2:1:1", "a:b", "2:1,x", "1:65"])
def test_invalid_values_name_the_bad_pair_and_the_valid_forms(text) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as error:
        world_sizes_value(text)
    assert "SAVE:LOAD pairs of positive ints, comma separated, e.g. 2:1,2:2,1:2" in str(error.value)


def test_item_id_part_and_no_torch_import() -> None:
    assert pair_id((2, 1)) == "2:1"
    code = "import sys; import pytest_ckpt.plugin.option_values; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
