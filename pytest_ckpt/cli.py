"""`pytest-ckpt audit PATH...`: will torch.load(weights_only=True) accept these files?
`pytest-ckpt migrate IN OUT [--trust]`: convert a legacy checkpoint so that it will.
`pytest-ckpt diff A B`: what differs between two checkpoints (pytest_ckpt.diff; exit 0 equal,
1 different, 2 unreadable or refused).

Audit exit status: 0 every file loads; 1 findings; 2 a file is unreadable or bad arguments.
In a folder a framework wrote (HF Trainer, accelerate, timm), a file passes when the loader
that framework reads it with accepts it (or never reads it); `--strict`: weights_only=True
with torch's allowlist alone must accept it too.
A PATH may be a folder (every checkpoint-like file in it, a verdict each and a total), a
safetensors file, an SB3 zip or a DCP folder: `pytest_ckpt.audit.formats.walk`, which asks
the formats table (`audit.formats.table`) what each path is.
Migrate exit status: 0 written; 1 refused (OUT not written or replaced); 2 unreadable or bad
arguments.
Errors are one line on stderr, never a traceback; nothing from a file is ever executed
(except under --trust, which says so).

Migrate is the library function `pytest_ckpt.migrate.workflow.migrate_file`: static by
default (nothing from the file runs), `--trust` unpickles for real, `--adapt MODULE:FUNC`
passes the result through your own function; IN is never overwritten, OUT is written
atomically, only once it passes the auditor.
"""

from __future__ import annotations

import argparse
import os
import sys

from pytest_ckpt.audit.allowlist import load_allowlist
from pytest_ckpt.audit.escape import escape
from pytest_ckpt.audit.formats.walk import audit_target
from pytest_ckpt.audit.formats.walk_report import (
    exit_status,
    render_targets_json,
    render_targets_sarif,
    render_targets_text,
)
from pytest_ckpt.audit.global_kinds import runs_code, searching
from pytest_ckpt.migrate.workflow import REFERENCE_V0, MigrationFailed, migrate_file
from pytest_ckpt.torch_support import new_advisories


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
    audit.add_argument(
        "--strict",
        action="store_true",
        help="plain torch.load(weights_only=True) decides the exit status, even for files "
        "that their framework's loader (with its own allowlist) reads, or never reads",
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
    adapt = migrate.add_mutually_exclusive_group()
    adapt.add_argument(
        "--adapt",
        metavar="MODULE:FUNC",
        help="then pass the converted checkpoint through your function (imported by name: "
        "your code, never the file's) to bring it to your current format",
    )
    adapt.add_argument(
        "--reference-v0",
        dest="adapt",
        action="store_const",
        const=REFERENCE_V0,
        help=f"IN is a schema-0 pytest-ckpt reference checkpoint: --adapt {REFERENCE_V0}",
    )
    add_diff_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for advisory in new_advisories():  # once, before any verdict that it qualifies
        print(f"pytest-ckpt: warning: {advisory}", file=sys.stderr)
    with searching(args.path):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.command == "diff":
        return diff_command(args)
    if args.command == "migrate":
        return migrate_command(
            args.source, args.target, trust=args.trust, adapt=args.adapt, force=args.force
        )
    allowlist = load_allowlist(args.allow)
    targets = [
        audit_target(path, allowlist, args.allow, map_location=args.map_location)
        for path in args.files
    ]
    reports = [report for target in targets for report in target.reports]
    if args.json:
        print(render_targets_json(targets, strict=args.strict))
    elif args.sarif:
        print(render_targets_sarif(targets, strict=args.strict))
    else:
        print(render_targets_text(targets, strict=args.strict))
    for report in reports:
        if report.error is not None:
            print(
                f"pytest-ckpt audit: {escape(report.path)}: {escape(report.error)}"
                f"{_option_hint(report.path, report.error)}",
                file=sys.stderr,
            )
    return exit_status(targets, strict=args.strict)


def _option_hint(path: str, error: str) -> str:
    """A missing PATH that looks like an option came after `--` (the pre-commit hook's entry
    ends with one): say where options go."""
    if path.startswith("-") and error == "no such file":
        return " (after `--` every argument is a file name: put options before the `--`)"
    return ""


def migrate_command(
    source: str, target: str, *, trust: bool, adapt: str | None = None, force: bool = False
) -> int:
    """`pytest-ckpt migrate`: `migrate_file`, its report printed (escaped), its exit status."""
    try:
        done = migrate_file(source, target, trust=trust, adapt=adapt, force=force)
    except MigrationFailed as failed:
        print(f"pytest-ckpt migrate: {escape(str(failed))}", file=sys.stderr)
        for line in failed.details:
            print(f"  {escape(line)}", file=sys.stderr)
        return failed.status
    for line in done.conversions:
        print(f"converted {escape(line)}")
    count = len(done.conversions)
    print(f"wrote {escape(target)} ({count} conversion(s)); it loads with weights_only=True")
    return 0


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def add_diff_parser(commands: argparse._SubParsersAction) -> None:
    """`pytest-ckpt diff A B`: pytest_ckpt.diff, static; exit 0 equal, 1 different, 2 refused."""
    diff = commands.add_parser(
        "diff", help="what differs between two checkpoints (nothing from either runs)"
    )
    diff.add_argument("a", metavar="A", help="torch file, safetensors (or its index), DCP folder")
    diff.add_argument("b", metavar="B")
    diff.add_argument("--rtol", type=_tolerance, default=0.0, help="relative tolerance (0)")
    diff.add_argument("--atol", type=_tolerance, default=0.0, help="absolute tolerance (0)")
    diff.add_argument("--allow", action="append", default=[], type=_dotted, metavar="module.Name")
    _add_path_option(diff)
    fmt = diff.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print a JSON report")
    fmt.add_argument("--markdown", action="store_true", help="print Markdown for a PR comment")


def diff_command(args: argparse.Namespace) -> int:
    """Exit 0 equal, 1 different, 2 unreadable or refused (one line on stderr)."""
    from pytest_ckpt.diff import DiffRefused, diff_checkpoints
    from pytest_ckpt.diff.render import render_json, render_markdown, render_text

    try:
        result = diff_checkpoints(args.a, args.b, rtol=args.rtol, atol=args.atol, allow=args.allow)
    except DiffRefused as err:
        print(f"pytest-ckpt diff: {escape(str(err))}", file=sys.stderr)
        return 2
    render = render_json if args.json else render_markdown if args.markdown else render_text
    print(render(result))
    return 0 if result.equal else 1


if __name__ == "__main__":
    sys.exit(main())
