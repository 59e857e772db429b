"""The package's shape, checked so that it stays: imports go one way, the core never imports the
bundled reference system, no import cycle, no module past ~400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_ckpt"
MAX_LINES = 400
# layer -> layers it must never import (`cli -> migrate, audit, targets`; `targets -> audit,
# distributed`; `plugin -> checks, subject`; `checks -> audit`; `migrate -> audit, manager`;
# `adapters -> subject`; everyone -> vocabulary, errors).
FORBIDDEN = {
    "audit": {
        "checks",
        "plugin",
        "migrate",
        "cli",
        "manager",
        "subject",
        "reference",
        "distributed",
        "targets",
    },
    # what a PATH is (file, folder, DCP folder): above audit and distributed, below cli
    "targets": {"checks", "plugin", "migrate", "cli", "reference"},
    "checks": {"plugin", "migrate", "cli", "reference"},
    # diff reads what audit and distributed vouched for; cli and checks (golden) use it
    "diff": {"checks", "plugin", "migrate", "cli", "manager", "reference"},
    "migrate": {"checks", "plugin", "cli", "reference"},
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
