"""Distributed checkpoints at run time: DCP folders loaded safely, resume across world sizes,
crash-safe DCP folders. Reading the DCP format (the folder audit, `.metadata`, items) is the
auditor's: `pytest_ckpt.audit.formats.dcp`.

- `safe_reader`: `SafeFileSystemReader`, a drop-in `storage_reader` for `dcp.load` that
  refuses instead of running code, and `load_safely`.
- `world_size`: `check_world_size_resume`: save at SAVE ranks, resume at LOAD ranks, compare
  with the run that continued (`protocol`: how a subject provides its distributed build;
  `module_system`: `ModuleSubject`'s; `launch`: the processes; the `--ckpt-world-sizes`
  parser is the plugin's, in `plugin.options`).
- `folders`: crash-safe DCP folders for `CheckpointManager` (`save_dcp`, `latest_dcp`, ...).

This package imports nothing heavy itself: `pytest-ckpt audit` on a file never imports
torch.distributed.
"""
