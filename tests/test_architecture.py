"""The package's shape, checked so that it stays: imports go one way, the core never imports the
bundled reference system, no import cycle, no module past ~400 lines."""

from __future__ import annotations

import ast
import pickletools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_ckpt"
MAX_LINES = 400
MAX_FUNCTION_LINES = 80
MAX_BASES = 2  # a class of 3+ bases is built from mixins: one reader, three files
# Functions still past MAX_FUNCTION_LINES, each with why; the list only shrinks.
LONG_FUNCTIONS: set[str] = set()
_OUTSIDE_AUDIT = {
    "checks", "plugin", "migrate", "cli", "manager", "async_saves", "subject", "adapters",
    "reference", "distributed", "dcp", "diff",
}  # fmt: skip
# layer -> layers it must never import (`cli -> migrate, audit, diff`; `plugin -> checks,
# subject, distributed`; `checks -> audit, diff`; `migrate -> audit`; `distributed -> audit,
# checks, adapters`; `manager -> async_saves -> distributed`; `adapters -> subject`;
# everyone -> vocabulary, errors). `audit.formats` is the file kinds the auditor reads.
FORBIDDEN = {
    "audit": _OUTSIDE_AUDIT,
    "audit.formats": _OUTSIDE_AUDIT,
    # the runtime: safe loads, world-size resume, crash-safe DCP folders
    "distributed": {"plugin", "migrate", "cli", "manager", "async_saves", "diff", "reference"},
    "dcp": {"plugin", "migrate", "cli", "manager", "reference"},
    "manager": {"plugin", "migrate", "cli", "adapters", "diff", "reference"},
    "async_saves": {"plugin", "migrate", "cli", "manager", "audit", "reference"},
    "checks": {"plugin", "migrate", "cli", "manager", "distributed", "reference"},
    # diff reads what audit and distributed vouched for; cli and checks (golden) use it
    "diff": {"checks", "plugin", "migrate", "cli", "manager", "reference"},
    "migrate": {
        "checks",
        "plugin",
        "cli",
        "manager",
        "distributed",
        "dcp",
        "diff",
        "adapters",
        "subject",
        "reference",
    },
    "plugin": {"migrate", "cli", "reference"},
    "cli": {"plugin", "reference"},
    # adapters are subjects: users of the protocol, like the reference, never of the harness
    "adapters": {"checks", "plugin", "migrate", "cli", "audit", "manager", "reference"},
    "subject": {"adapters", "checks", "plugin", "reference"},
    "vocabulary": {"*"},
    "errors": {"*"},
}
# Named exceptions, each with its reason. A framework's checkpoint folder (accelerate's
# save_state) holds files the framework loads with its own allowlist: the adapter that reads
# it names the plain weights_only refusal with the auditor's findings (issue 22).
ALLOWED = {"pytest_ckpt.adapters.framework_folders": {"audit"}}

# The audit's core (the machine, torch's rules, findings, advice) reads no file format:
# `audit_file` (the package itself) is the torch file's audit, and stage 2 (`oracle`) runs
# torch's own loader over a legacy file.
FORMAT_USERS_IN_CORE = {"pytest_ckpt.audit", "pytest_ckpt.audit.oracle"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every pytest_ckpt module `path` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "pytest_ckpt"}


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {
    name: {i for i in imports_of(path) if i in MODULES and i != name}
    for name, path in MODULES.items()
}


def layer(name: str) -> str:
    parts = name.split(".")
    if parts[1:3] == ["audit", "formats"]:
        return "audit.formats"
    return parts[1] if len(parts) > 1 else "pytest_ckpt"


def test_nothing_in_the_core_imports_the_reference_system() -> None:
    leaks = {
        name: sorted(i for i in imported if layer(i) == "reference")
        for name, imported in GRAPH.items()
        if layer(name) != "reference"
    }
    assert {name: found for name, found in leaks.items() if found} == {}


@pytest.mark.parametrize("source", sorted(FORBIDDEN))
def test_imports_go_one_way(source: str) -> None:
    forbidden = FORBIDDEN[source]
    wrong = {
        name: sorted(
            i
            for i in imported
            if layer(i) != source
            and ("*" in forbidden or layer(i) in forbidden)
            and layer(i) not in ("errors", "vocabulary")
            and layer(i) not in ALLOWED.get(name, ())
        )
        for name, imported in GRAPH.items()
        if layer(name) == source
    }
    assert {name: found for name, found in wrong.items() if found} == {}


def test_there_is_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH[name]):
            # a package's own modules importing its __init__ is not a cycle
            if name.startswith(target + "."):
                continue
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_no_module_is_past_the_size_where_it_asks_to_be_split() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_audit_core_reads_no_file_format() -> None:
    wrong = {
        name: sorted(i for i in imported if layer(i) == "audit.formats")
        for name, imported in GRAPH.items()
        if layer(name) == "audit" and name not in FORMAT_USERS_IN_CORE
    }
    assert {name: found for name, found in wrong.items() if found} == {}


def _definitions(path: Path) -> list[tuple[str, ast.AST]]:
    """Every function and class of a module, by dotted name (methods under their class)."""
    found: list[tuple[str, ast.AST]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}.{child.name}"
                found.append((name, child))
                visit(child, name)
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text()), module_name(path))
    return found


DEFINITIONS = [item for path in MODULES.values() for item in _definitions(path)]


def test_no_function_is_past_the_length_a_reader_holds() -> None:
    """A function (nested ones and a class defined inside it count) stays under 80 lines."""
    long = {
        name: node.end_lineno - node.lineno + 1
        for name, node in DEFINITIONS
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    }
    assert {name: n for name, n in long.items() if name not in LONG_FUNCTIONS} == {}
    assert set(long) >= LONG_FUNCTIONS, "a function split since: take it off LONG_FUNCTIONS"


def test_no_class_is_built_from_mixins() -> None:
    mixed = {
        name: len(node.bases)
        for name, node in DEFINITIONS
        if isinstance(node, ast.ClassDef) and len(node.bases) > MAX_BASES
    }
    assert mixed == {}


# --- audit/formats: one interface, one table (issue 21) ---------------------------------
FORMATS_PACKAGE = "pytest_ckpt.audit.formats"
# Modules of audit/formats that are not a format, each with its job; every other module
# there exposes at least one module-level `Format`, and the table holds exactly those.
FORMAT_HELPERS = {
    "pytest_ckpt.audit.formats": "the `Format` interface and the `Probe` it recognises from",
    "pytest_ckpt.audit.formats.table": "THE ordered table: which format a path is",
    "pytest_ckpt.audit.formats.walk": "what a PATH given to `pytest-ckpt audit` is; the walk",
    "pytest_ckpt.audit.formats.walk_report": "the text of a walk",
    "pytest_ckpt.audit.formats.legacy": "the legacy format's pickles, for the torch file's row",
    "pytest_ckpt.audit.formats.bin_files": "is a .bin a checkpoint at all, for side_files' row",
    "pytest_ckpt.audit.formats.zip_directory": "zip members as torch's reader finds them",
    "pytest_ckpt.audit.formats.dcp": "the DCP audit (a package); its rows are dcp_format's",
    "pytest_ckpt.audit.formats.framework_loaders": (
        "after a file's audit, the verdict of the framework loader that reads it (issue 22)"
    ),
}
# Readers the table reaches only through a format module's row.
FORMAT_READERS = {
    "pytest_ckpt.audit.formats.legacy": "pytest_ckpt.audit.formats.torch_archive",
    "pytest_ckpt.audit.formats.bin_files": "pytest_ckpt.audit.formats.side_files",
    "pytest_ckpt.audit.formats.dcp.folder": "pytest_ckpt.audit.formats.dcp_format",
}


def _format_modules() -> list[str]:
    """The modules directly in audit/formats (the dcp/ package counted as one)."""
    depth = FORMATS_PACKAGE.count(".") + 1
    return sorted(
        name
        for name in MODULES
        if name.startswith(FORMATS_PACKAGE + ".") and name.count(".") == depth
    )


def test_each_format_module_exposes_the_format_interface() -> None:
    import importlib

    from pytest_ckpt.audit.formats import Format, table

    exposed: dict[str, list[Format]] = {}
    for name in [n for n in _format_modules() if n not in FORMAT_HELPERS]:
        module = importlib.import_module(name)
        exposed[name] = [v for v in vars(module).values() if isinstance(v, Format)]
        exposed[name] = [v for v in exposed[name] if v.audit.__module__ == name]
    assert {name: rows for name, rows in exposed.items() if not rows} == {}
    defined = {id(row): row.name for rows in exposed.values() for row in rows}
    in_table = {id(row): row.name for row in (*table.FORMATS, *table.BY_NAME)}
    assert sorted(defined.values()) == sorted(in_table.values())
    assert set(defined) == set(in_table)
    assert set(FORMAT_HELPERS) - {FORMATS_PACKAGE} <= set(_format_modules())


def test_readers_are_reached_through_their_format_row() -> None:
    for reader, row in FORMAT_READERS.items():
        assert reader in GRAPH[row] or any(m.startswith(reader) for m in GRAPH[row]), row


def test_the_walk_and_the_cli_choose_a_reader_only_through_the_table() -> None:
    """`walk` imports no format module (nor `audit_file`): the table chooses; the CLI's
    audit goes through `walk` (and its report) only."""
    allowed = {
        "pytest_ckpt.audit.formats.walk": {
            FORMATS_PACKAGE,
            "pytest_ckpt.audit.formats.table",
            "pytest_ckpt.audit.formats.framework_loaders",  # judges a report, chooses nothing
        },
        "pytest_ckpt.cli": {
            "pytest_ckpt.audit.formats.walk",
            "pytest_ckpt.audit.formats.walk_report",
        },
    }
    for module, may in allowed.items():
        imported = imports_of(MODULES[module])
        formats = {
            i for i in imported if i in MODULES and i.startswith(FORMATS_PACKAGE) and i not in may
        }
        assert formats == set(), module
        assert "pytest_ckpt.audit.audit_file" not in imported, module


def test_the_module_map_in_contributing_lists_every_module() -> None:
    """CONTRIBUTING.md's module map: one line per module (`- `name`: its job`), no more."""
    text = (PACKAGE.parent / "CONTRIBUTING.md").read_text()
    listed = [line.split("`")[1] for line in text.splitlines() if line.startswith("- `pytest_ckpt")]
    assert sorted(set(MODULES) - set(listed)) == [], "add a line for each to the module map"
    assert sorted(set(listed) - set(MODULES)) == [], "take these off the module map"
    assert len(listed) == len(set(listed)), "a module listed twice"


OPCODE_NAMES = frozenset(op.name for op in pickletools.opcodes)
# The only modules that know pickle opcodes by name: decoding, the machine, torch's rules.
OPCODE_MODULES = {
    "pytest_ckpt.audit.opcodes",
    "pytest_ckpt.audit.machine",
    "pytest_ckpt.audit.torch_rules",
}


def opcode_mentions(source: str) -> list[str]:
    """Where a module names a pickle opcode: a string that is an opcode's name, an opcode
    constant of `pickle` (`pickle.MARK`, however imported or aliased), or `pickletools` at
    all. A semantics' `_op_<NAME>` handlers are method names the machine dispatches to, not
    a second decoder: they are not counted."""
    tree = ast.parse(source)
    pickle_names = {"pickle"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            pickle_names |= {a.asname or a.name for a in node.names if a.name == "pickle"}
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and node.value in OPCODE_NAMES:
            found.append(f"{line}: {node.value!r}")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in OPCODE_NAMES
            and isinstance(node.value, ast.Name)
            and node.value.id in pickle_names
        ):
            found.append(f"{line}: {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Import) and any(a.name == "pickletools" for a in node.names):
            found.append(f"{line}: import pickletools")
        elif isinstance(node, ast.ImportFrom) and node.module in ("pickle", "pickletools"):
            names = [a.name for a in node.names]
            if node.module == "pickletools" or set(names) & OPCODE_NAMES:
                found.append(f"{line}: from {node.module} import {', '.join(names)}")
    return found


def test_opcode_mentions_finds_every_way_of_naming_an_opcode() -> None:
    source = (
        "import pickle as p\nimport pickletools\nfrom pickle import MARK\n"
        "x = p.STOP\ny = op.name == 'GLOBAL'\ndef _op_BUILD(self): return 'not one'\n"
    )
    assert [m.split(": ", 1)[1] for m in opcode_mentions(source)] == [
        "import pickletools",
        "from pickle import MARK",
        "p.STOP",
        "'GLOBAL'",
    ]


def test_only_the_machine_modules_know_opcode_names() -> None:
    named = {
        name: mentions
        for name, path in MODULES.items()
        if name not in OPCODE_MODULES and (mentions := opcode_mentions(path.read_text()))
    }
    assert named == {}
