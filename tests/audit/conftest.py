from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from tests.audit.corpus import write_corpus

TORCH_VERDICT = """
import json, sys, warnings
import torch
warnings.simplefilter("ignore")
verdicts = {}
map_location = sys.argv[1] or None
for path in sys.argv[2:]:
    try:
        with torch.serialization.safe_globals([]):
            torch.load(path, weights_only=True, map_location=map_location)
        verdicts[path] = True
    except Exception as err:  # the verdict is all we want: loadable or not
        verdicts[path] = False
print(json.dumps(verdicts))
"""


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, write_corpus(folder)


def torch_verdicts(paths: list[pathlib.Path], map_location: str | None = None) -> dict[str, bool]:
    """What torch.load(weights_only=True, map_location=...) does with each file, in a fresh
    process (a clean allowlist, and nothing a file does can reach the test process)."""
    result = subprocess.run(
        [sys.executable, "-c", TORCH_VERDICT, map_location or "", *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)
