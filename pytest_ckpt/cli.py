"""`pytest-ckpt audit FILE...`: will torch.load(weights_only=True) accept these files?
`pytest-ckpt migrate IN OUT [--trust]`: convert a legacy checkpoint so that it will.

Audit exit status: 0 every file loads; 1 findings; 2 a file is unreadable or bad arguments.
Migrate exit status: 0 written; 1 refused (OUT not written); 2 unreadable or bad arguments.
Errors are one line on stderr, never a traceback; nothing from a file is ever executed.
"""

from __future__ import annotations

import argparse
import sys

from pytest_ckpt.audit import audit_file
from pytest_ckpt.audit.allowlist import load_allowlist
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
        from pytest_ckpt.migrate_file import migrate_command

        return migrate_command(
            args.source, args.target, trust=args.trust, reference_v0=args.reference_v0
        )
    allowlist = load_allowlist(args.allow)
    reports = [audit_file(path, allowlist=allowlist) for path in args.files]
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


if __name__ == "__main__":
    sys.exit(main())
