"""`pytest-ckpt audit FILE...`: will torch.load(weights_only=True) accept these files?
`pytest-ckpt migrate IN OUT [--trust]`: convert a legacy checkpoint so that it will.

Audit exit status: 0 every file loads; 1 findings; 2 a file is unreadable or bad arguments.
Migrate exit status: 0 written; 1 refused (OUT not written); 2 unreadable or bad arguments.
Errors are one line on stderr, never a traceback; nothing from a file is ever executed
(except under --trust, which says so).

Migrate is static by default (pytest_ckpt.migrate.static: nothing from the file runs);
`--trust` unpickles for real (pytest_ckpt.migrate.trusted). Either way IN is never
overwritten, OUT is written atomically and only if every object converted, and OUT must
pass the auditor before it is kept.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from pytest_ckpt.audit import audit_file
from pytest_ckpt.audit.allowlist import load_allowlist
from pytest_ckpt.audit.archive import Unreadable, regular_file_size
from pytest_ckpt.audit.render import render_json, render_sarif, render_text


def _dotted(text: str) -> str:
    if "." not in text or text.startswith(".") or text.endswith("."):
        raise argparse.ArgumentTypeError(f"expected a dotted name like module.Name, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pytest-ckpt", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    audit = commands.add_parser("audit", help="statically audit checkpoint files")
    audit.add_argument("files", nargs="+", metavar="FILE")
    fmt = audit.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print a JSON report")
    fmt.add_argument("--sarif", action="store_true", help="print a SARIF 2.1.0 report")
    audit.add_argument(
        "--allow",
        action="append",
        default=[],
        type=_dotted,
        metavar="module.Name",
        help="treat this global as allow-listed (as torch.serialization.add_safe_globals would)",
    )
    audit.add_argument(
        "--map-location",
        default=None,
        metavar="DEVICE",
        help="the verdict is for torch.load(..., map_location=DEVICE), e.g. cpu; without it, "
        "storages saved on a device this host lacks (cuda:0 on a CPU-only host) are refused",
    )
    migrate = commands.add_parser(
        "migrate", help="convert a legacy checkpoint to primitives and tensors (weights_only-safe)"
    )
    migrate.add_argument("source", metavar="IN")
    migrate.add_argument("target", metavar="OUT")
    migrate.add_argument(
        "--trust",
        action="store_true",
        help="unpickle IN for real (RUNS CODE FROM THE FILE): only for files you wrote yourself",
    )
    migrate.add_argument(
        "--reference-v0",
        action="store_true",
        help="IN is a schema-0 pytest-ckpt reference checkpoint: write it in the current format",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "migrate":
        return migrate_command(
            args.source, args.target, trust=args.trust, reference_v0=args.reference_v0
        )
    allowlist = load_allowlist(args.allow)
    reports = [audit_path(path, allowlist, args.allow, args.map_location) for path in args.files]
    if args.json:
        print(render_json(reports))
    elif args.sarif:
        print(render_sarif(reports))
    else:
        print(render_text(reports))
    for report in reports:
        if report.error is not None:
            print(f"pytest-ckpt audit: {report.path}: {report.error}", file=sys.stderr)
    if any(r.error is not None for r in reports):
        return 2
    return 1 if any(r.findings for r in reports) else 0


def audit_path(path: str, allowlist, allow: list[str], map_location: str | None = None):
    """A DCP folder (or a file of one: "audit the folder") goes to the DCP audit; anything
    else to the file auditor."""
    from pytest_ckpt.distributed.folder_audit import audit_dcp_target

    dcp_report = audit_dcp_target(path, allowlist=allowlist, allow=allow)
    return dcp_report or audit_file(path, allowlist=allowlist, map_location=map_location)


def migrate_command(source: str, target: str, *, trust: bool, reference_v0: bool = False) -> int:
    """`pytest-ckpt migrate`: its exit status, having printed what it converted or why not.
    Migration is imported here, not with the module: `pytest-ckpt audit` does not need it."""
    from pytest_ckpt.migrate.static import ConversionRefused, convert_file

    src, out = Path(source), Path(target)
    try:  # before anything opens it: a FIFO would block, a device never ends
        regular_file_size(src)
    except Unreadable as err:
        print(f"pytest-ckpt migrate: {src}: {err}", file=sys.stderr)
        return 2
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
    if reference_v0:  # the reference system's own adapter: named by string, never imported
        adapt_v0 = importlib.import_module("pytest_ckpt.reference.schema_v0").adapt_v0
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

    from pytest_ckpt.durable import write_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path.parent, path, lambda handle: torch.save(state, handle))


if __name__ == "__main__":
    sys.exit(main())
