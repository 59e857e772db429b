"""`pytest-ckpt migrate IN OUT`: write a weights_only-loadable copy of a legacy checkpoint.

Static by default (pytest_ckpt.audit.convert: nothing from the file runs); `--trust` unpickles
for real (pytest_ckpt.trust). Either way IN is never overwritten, OUT is written atomically
and only if every object converted, and OUT must pass the auditor before it is kept.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pytest_ckpt.audit import audit_file
from pytest_ckpt.audit.archive import Unreadable
from pytest_ckpt.manager import write_atomically
from pytest_ckpt.migrate.static import ConversionRefused, convert_file


def migrate_command(source: str, target: str, *, trust: bool, reference_v0: bool = False) -> int:
    src, out = Path(source), Path(target)
    if out.exists() and src.exists() and os.path.samefile(src, out):
        print(f"pytest-ckpt migrate: refusing to overwrite the input {src}", file=sys.stderr)
        return 2
    conversions: list[str] = []
    try:
        if trust:
            from pytest_ckpt.migrate.trusted import load_trusted, to_primitives

            result = to_primitives(load_trusted(src), "root", conversions)
        else:
            converted = convert_file(src)
            result, conversions = converted.result, converted.conversions
    except Unreadable as err:
        print(f"pytest-ckpt migrate: {src}: {err}", file=sys.stderr)
        return 2
    except ConversionRefused as refused:
        print(f"pytest-ckpt migrate: {src}: refused; {out} not written:", file=sys.stderr)
        for line in refused.refusals:
            print(f"  {line}", file=sys.stderr)
        return 1
    if reference_v0:
        from pytest_ckpt.reference.schema_v0 import adapt_v0

        try:
            result = adapt_v0(result)
        except (KeyError, TypeError, ValueError) as err:
            print(
                f"pytest-ckpt migrate: {src}: not a schema-0 reference checkpoint ({err}); "
                f"{out} not written",
                file=sys.stderr,
            )
            return 1
        conversions.append("root: schema 0 reference checkpoint -> schema 1")
    try:
        write_checkpoint_atomically(result, out)
    except (OSError, RuntimeError) as err:
        print(f"pytest-ckpt migrate: cannot write {out}: {err}", file=sys.stderr)
        return 2
    report = audit_file(out)
    if not report.loadable:
        out.unlink()
        reason = report.error or report.findings[0].detail
        print(
            f"pytest-ckpt migrate: the converted file would not load ({reason}); {out} not kept",
            file=sys.stderr,
        )
        return 1
    for line in conversions:
        print(f"converted {line}")
    print(f"wrote {out} ({len(conversions)} conversion(s)); it loads with weights_only=True")
    return 0


def write_checkpoint_atomically(state: object, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path.parent, path, lambda handle: torch.save(state, handle))
