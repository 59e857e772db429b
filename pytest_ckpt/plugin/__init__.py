"""The pytest plugin (the `pytest11` entry point, or `-p pytest_ckpt.plugin`).

Follow `pytest --ckpt-roundtrip` from the option to the verdict:
`options` (the `--ckpt-*` values) -> `hooks` (pytest calls these) -> `session` (the subject,
the generated items, the results) -> `matrix` (the generated tests) -> `pytest_ckpt.checks`
(save, `torch.load(weights_only=True)`, compare, resume; no pytest) -> `report` (the table).
Snapshots: `snapshot` (the syrupy extension) and `snapshot_compare` (floats with tolerance).

pytest registers this module: the hooks and fixtures below are what it finds here.
"""

from pytest_ckpt.plugin.fixtures import (
    ckpt_backcompat,
    ckpt_check,
    ckpt_clock,
    ckpt_grid,
    ckpt_model,
    ckpt_options,
    ckpt_resume,
    ckpt_roundtrip,
    ckpt_snapshot,
    ckpt_stage,
    ckpt_subject,
)
from pytest_ckpt.plugin.hooks import (
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_generate_tests,
    pytest_sessionfinish,
    pytest_sessionstart,
    pytest_terminal_summary,
    pytest_testnodedown,
)

__all__ = [
    "ckpt_backcompat",
    "ckpt_check",
    "ckpt_clock",
    "ckpt_grid",
    "ckpt_model",
    "ckpt_options",
    "ckpt_resume",
    "ckpt_roundtrip",
    "ckpt_snapshot",
    "ckpt_stage",
    "ckpt_subject",
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_generate_tests",
    "pytest_sessionfinish",
    "pytest_sessionstart",
    "pytest_terminal_summary",
    "pytest_testnodedown",
]
