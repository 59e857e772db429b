"""The file kinds the auditor reads, one module each, and the folder walk beside them.

Each kind says whether a file is one of it and audits it to a `Report`: `torch_archive`
(what `torch.load` reads: a zip, a legacy file, a raw pickle; `audit_file` runs the verdict
on it), `legacy`, `safetensors`, `sb3_zip`, `bin_files` (a `.bin` that is not a checkpoint)
and `dcp/` (a DCP folder: its `.metadata` and items). `walk` decides which kind a PATH is
(a plain file never reaches the DCP check unless its name is a DCP member's) and walks
folders; `walk_report` renders what a walk found.
"""
