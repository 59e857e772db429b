"""Distributed checkpoints: DCP folders audited and loaded safely, resume across world sizes.

- `folder_audit`: `audit_dcp_folder(path) -> Report` (what `pytest-ckpt audit DIR` runs for
  a folder with a `.metadata`), `is_dcp_folder`, `audit_dcp_target` (the CLI's dispatch);
  built on `metadata_allowlist` (DCP's classes, read from the installed torch),
  `metadata_scan` (the static machine on `.metadata`, after `metadata_proof`: a fast proof
  of "clean" over `metadata_entries` and DCP's repeated `metadata_records`), `items` (shard
  items read statically; `item_templates` answers items that differ from one torch's
  reader opened only in their data) and `chunks` (do a tensor's chunks tile it).
- `safe_reader`: `SafeFileSystemReader`, a drop-in `storage_reader` for `dcp.load` that
  refuses instead of running code, and `load_safely`.
- `world_size`: `check_world_size_resume`: save at SAVE ranks, resume at LOAD ranks, compare
  with the run that continued (`protocol`: how a subject provides its distributed build;
  `module_system`: `ModuleSubject`'s; `launch`: the processes; `world_size_option`: the
  plugin option's parser).
- `folders`: crash-safe DCP folders for `CheckpointManager` (`save_dcp`, `latest_dcp`, ...).

This package imports nothing heavy itself: `pytest-ckpt audit` on a file never imports
torch.distributed, and the option parser imports no torch at all.
"""
