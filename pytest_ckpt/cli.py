"""`pytest-ckpt audit PATH...`: will torch.load(weights_only=True) accept these files?
`pytest-ckpt migrate IN OUT [--trust]`: convert a legacy checkpoint so that it will.

Audit exit status: 0 every file loads; 1 findings; 2 a file is unreadable or bad arguments.
A PATH may be a folder (every checkpoint-like file in it, a verdict each and a total), a
safetensors file, an SB3 zip or a DCP folder: `pytest_ckpt.targets.layouts`.
Migrate exit status: 0 written; 1 refused (OUT not written or replaced); 2 unreadable or bad
arguments.
Errors are one line on stderr, never a traceback; nothing from a file is ever executed
(except under --trust, which says so).

Migrate is static by default (pytest_ckpt.migrate.static: nothing from the file runs);
`--trust` unpickles for real (pytest_ckpt.migrate.trusted). Either way IN is never
overwritten, an existing OUT only with --force; OUT is written atomically and only if every
object converted and the written bytes pass the auditor (checked before the rename, so a
refused conversion never touches an existing OUT).
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
from pytest_ckpt.audit.escape import escape
from pytest_ckpt.audit.global_kinds import runs_code, searching
from pytest_ckpt.audit.render import render_json, render_sarif
from pytest_ckpt.targets.folder_report import render_targets_text, with_artifacts
from pytest_ckpt.targets.layouts import audit_target


def _dotted(text: str) -> str:
    if "." not in text or text.startswith(".") or text.endswith("."):
        raise argparse.ArgumentTypeError(f"expected a dotted name like module.Name, got {text!r}")
    if runs_code(text):
        raise argparse.ArgumentTypeError(
            f"refusing to allow {text}: torch would call it with arguments the file chooses, "
            "which runs code; allow-list classes only"
        )
    return text


def _folder(text: str) -> str:
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"--path {text!r} is not a folder")
    return text


def _add_path_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--path",
        action="append",
        default=[],
        type=_folder,
        metavar="DIR",
        help="also look for your modules' sources here (repeatable; the working directory and "
        "sys.path are always searched); nothing is imported or run",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pytest-ckpt", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    audit = commands.add_parser("audit", help="statically audit checkpoint files")
    audit.add_argument("files", nargs="+", metavar="PATH", help="files or folders")
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
    _add_path_option(audit)
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
    migrate.add_argument("--force", action="store_true", help="replace OUT if it exists")
    _add_path_option(migrate)
    migrate.add_argument(
        "--reference-v0",
        action="store_true",
        help="IN is a schema-0 pytest-ckpt reference checkpoint: write it in the current format",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with searching(args.path):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.command == "migrate":
        return migrate_command(
            args.source,
            args.target,
            trust=args.trust,
            reference_v0=args.reference_v0,
            force=args.force,
        )
    allowlist = load_allowlist(args.allow)
    targets = [
        audit_target(path, allowlist, args.allow, map_location=args.map_location)
        for path in args.files
    ]
    reports = [report for target in targets for report in target.reports]
    if args.json:
        print(render_json(reports))
    elif args.sarif:
        print(with_artifacts(render_sarif(reports), reports))
    else:
        print(render_targets_text(targets))
    for report in reports:
        if report.error is not None:
            print(
                f"pytest-ckpt audit: {escape(report.path)}: {escape(report.error)}",
                file=sys.stderr,
            )
    if any(r.error is not None for r in reports):
        return 2
    return 1 if any(r.findings for r in reports) else 0


class _NotLoadable(Exception):
    """The converted bytes fail the audit: they are not kept."""


def migrate_command(
    source: str, target: str, *, trust: bool, reference_v0: bool = False, force: bool = False
) -> int:
    """`pytest-ckpt migrate`: its exit status, having printed what it converted or why not.
    Migration is imported here, not with the module: `pytest-ckpt audit` does not need it."""
    from pytest_ckpt.migrate.static import ConversionRefused, convert_file

    src, out = Path(source), Path(target)
    shown_src, shown_out = escape(source), escape(target)  # a file name is data too
    try:  # before anything opens it: a FIFO would block, a device never ends
        regular_file_size(src)
    except Unreadable as err:
        print(f"pytest-ckpt migrate: {shown_src}: {err}", file=sys.stderr)
        return 2
    if out.exists() and src.exists() and os.path.samefile(src, out):
        print(f"pytest-ckpt migrate: refusing to overwrite the input {shown_src}", file=sys.stderr)
        return 2
    if (out.exists() or out.is_symlink()) and not force:
        print(
            f"pytest-ckpt migrate: {shown_out} exists; not replaced "
            "(fix: pass --force to replace it)",
            file=sys.stderr,
        )
        return 1
    conversions: list[str] = []
    try:
        if trust:
            from pytest_ckpt.migrate.trusted import load_trusted, to_primitives

            try:
                loaded = load_trusted(src)
            except Exception as err:  # whatever the file's own code raised
                reason = escape(f"{err!r:.200}")
                print(
                    f"pytest-ckpt migrate: {shown_src}: cannot unpickle: {reason}", file=sys.stderr
                )
                return 2
            result = to_primitives(loaded, "root", conversions)
        else:
            converted = convert_file(src)
            result, conversions = converted.result, converted.conversions
    except Unreadable as err:
        print(f"pytest-ckpt migrate: {shown_src}: {escape(str(err))}", file=sys.stderr)
        return 2
    except ConversionRefused as refused:
        print(
            f"pytest-ckpt migrate: {shown_src}: refused; {shown_out} not written:", file=sys.stderr
        )
        for line in refused.refusals:
            print(f"  {escape(line)}", file=sys.stderr)
        return 1
    if reference_v0:  # the reference system's own adapter: named by string, never imported
        adapt_v0 = importlib.import_module("pytest_ckpt.reference.schema_v0").adapt_v0
        try:
            result = adapt_v0(result)
        except (KeyError, TypeError, ValueError) as err:
            print(
                f"pytest-ckpt migrate: {shown_src}: not a schema-0 reference checkpoint "
                f"({escape(str(err))}); "
                f"{shown_out} not written",
                file=sys.stderr,
            )
            return 1
        conversions.append("root: schema 0 reference checkpoint -> schema 1")
    try:
        write_checkpoint_atomically(result, out, overwrite=force)
    except _NotLoadable as err:
        print(
            f"pytest-ckpt migrate: the converted file would not load ({escape(str(err))}); "
            f"{shown_out} not written",
            file=sys.stderr,
        )
        return 1
    except RecursionError:
        print(
            f"pytest-ckpt migrate: {shown_src}: refused; {shown_out} not written: nested deeper "
            "than torch.save can write (fix: flatten the structure before saving)",
            file=sys.stderr,
        )
        return 1
    except FileExistsError:
        print(f"pytest-ckpt migrate: {shown_out} appeared meanwhile; not replaced", file=sys.stderr)
        return 1
    except (OSError, RuntimeError) as err:
        print(f"pytest-ckpt migrate: cannot write {shown_out}: {err}", file=sys.stderr)
        return 2
    for line in conversions:
        print(f"converted {escape(line)}")
    print(f"wrote {shown_out} ({len(conversions)} conversion(s)); it loads with weights_only=True")
    return 0


def _audit_before_rename(temp: Path) -> None:
    report = audit_file(temp)
    if not report.loadable:
        raise _NotLoadable(report.error or report.findings[0].detail)


def write_checkpoint_atomically(state: object, path: Path, *, overwrite: bool = True) -> None:
    """torch.save `state` to a temp file beside `path`, audit it, then move it into place
    (with `overwrite=False`, only if `path` does not exist)."""
    import torch

    from pytest_ckpt.durable import write_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(
        path.parent,
        path,
        lambda handle: torch.save(state, handle),
        check=_audit_before_rename,
        overwrite=overwrite,
    )


if __name__ == "__main__":
    sys.exit(main())
