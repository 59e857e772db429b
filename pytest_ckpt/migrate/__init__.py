"""Migration: bring checkpoints to what `torch.load(weights_only=True)` accepts, and to the
current schema.

- `workflow`: `migrate_file`, the whole migration of one file (the CLI wraps it);
- `schema`: the schema versions and the upgrade chain (`upgrade`, re-exported here);
- `rules`: the conversion table, one rule per kind of refused object, each carrying its
  static, `--trust` and final-pass behaviour (three loops over one table);
- `objects`: an object's pickled state, and the refusals both modes share;
- `static`: the static converter (`pytest-ckpt migrate`), run on the auditor's pickle machine:
  nothing from the file runs; `markers` (what it builds), `calls` (torch's allow-listed
  calls, bounded), `storages` (tensor bytes as torch reads them); whether a global is an
  Enum class is the auditor's answer (`audit.global_kinds`), never a second one;
- `trusted`: `--trust`, the one place that unpickles with `weights_only=False`;
- `finish`: the one final pass both modes run, iterative, sharing kept, refusals by path.
"""

from __future__ import annotations

from pytest_ckpt.migrate.schema import (
    CURRENT_SCHEMA_VERSION,
    OLDEST_LOADABLE_VERSION,
    UPGRADES,
    schema_version_of,
    upgrade,
)

__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "OLDEST_LOADABLE_VERSION",
    "UPGRADES",
    "schema_version_of",
    "upgrade",
]
