"""One answer to "what does this global name", without importing it, for the auditor's advice
and for migrate alike: a name is a class only when nothing in its module can rebind it, and
the two never disagree on a file."""

from __future__ import annotations

import enum
import sys
from pathlib import Path

import pytest

from pytest_ckpt.audit import audit_file, global_kinds
from pytest_ckpt.errors import ConversionRefused
from pytest_ckpt.migrate.static import convert_file
from tests.audit.test_hostile import PROTO2, global_op, write_zip

ENUM = "import enum\nclass Stage(enum.IntEnum):\n    A = 1\n"


@pytest.fixture
def place(tmp_path, monkeypatch):
    """Write `source` as the module `name` in a folder on sys.path (never imported)."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(source)
        global_kinds.clear_caches()

    yield write
    global_kinds.clear_caches()


@pytest.mark.parametrize(
    "rebinding",
    [
        "for Stage in range(2):\n    pass\n",
        "del Stage\n",
        "try:\n    from fastpkg import Stage\nexcept ImportError:\n    pass\n",
        "with open(__file__) as Stage:\n    pass\n",
        "try:\n    pass\nexcept ValueError as Stage:\n    pass\n",
        "def install():\n    global Stage\n    Stage = print\n",
        "from elsewhere import *\n",
        "globals()['Stage'] = print\n",
        "import sys\nsetattr(sys.modules[__name__], 'Stage', print)\n",
        "match 1:\n    case Stage:\n        pass\n",
    ],
    ids=[
        "for",
        "del",
        "try-import",
        "with",
        "except",
        "global",
        "star",
        "globals",
        "setattr",
        "match",
    ],
)
def test_a_class_that_anything_else_may_rebind_is_unknown(place, rebinding) -> None:
    place("rebound_mod", ENUM + rebinding)
    assert global_kinds.kind_of("rebound_mod.Stage") == "unknown"
    assert "rebound_mod" not in sys.modules


def test_what_import_would_find_is_told_apart_without_importing(place) -> None:
    place(
        "kinds_mod",
        "import enum\nraise SystemExit('imported')\nclass Base(enum.Enum):\n    pass\n"
        "class Stage(Base):\n    A = 1\n    B = 'b'\nclass Outer:\n    class Inner(enum.IntEnum):\n"
        "        X = 3\n    def method(self):\n        pass\ndef launch(code):\n    pass\n"
        "class Later(enum.Enum, metaclass=enum.EnumMeta):\n    Y = enum.auto()\n",
    )
    describe = global_kinds.describe_global
    assert describe("kinds_mod.Stage") == global_kinds.GlobalKind("class", True, (1, "b"))
    assert describe("kinds_mod.Outer.Inner") == global_kinds.GlobalKind("class", True, (3,))
    assert describe("kinds_mod.Later") == global_kinds.GlobalKind("class", True, None)
    assert global_kinds.kind_of("kinds_mod.Outer") == "class"
    assert global_kinds.kind_of("kinds_mod.Outer.method") == "function"
    assert global_kinds.kind_of("kinds_mod.launch") == "function"
    assert global_kinds.kind_of("kinds_mod.launch.x") == "unknown"
    assert "kinds_mod" not in sys.modules


def _call_of(tmp_path, module: str, name: str):
    """A file holding {'v': module.name(1)}: an Enum member, or a call of a function."""
    payload = PROTO2 + b"}X\x01\x00\x00\x00v" + global_op(module, name) + b"K\x01\x85Rs."
    return write_zip(tmp_path / f"{module}.{name}.pt", payload)


def _verdicts(path) -> tuple[bool, bool]:
    """(the auditor offers the global for allow-listing, migrate converts the call)."""
    (finding,) = audit_file(path).findings
    try:
        convert_file(path)
        converted = True
    except ConversionRefused:
        converted = False
    return bool(finding.needs), converted


@pytest.mark.parametrize(
    ("module", "name", "offered"),
    [
        ("agree_enum", "Stage", True),
        ("agree_nested", "Outer.Stage", True),
        ("agree_rebound", "Stage", False),
        ("agree_function", "Stage", False),
        ("__main__", "Stage", False),
    ],
)
def test_advice_and_migrate_give_one_answer(place, tmp_path, monkeypatch, module, name, offered):
    """The auditor offers an Enum class exactly when migrate converts its member: an Enum
    nested in a class, a rebound name, a function, the auditor's own `__main__`."""
    place("agree_enum", ENUM)
    place(
        "agree_nested", "import enum\nclass Outer:\n    class Stage(enum.IntEnum):\n        A = 1\n"
    )
    place("agree_rebound", ENUM + "Stage = print\n")
    place("agree_function", "def Stage(value):\n    pass\n")
    monkeypatch.setattr(sys.modules["__main__"], "Stage", _Stage, raising=False)
    assert _verdicts(_call_of(tmp_path, module, name)) == (offered, offered)


class _Stage(enum.IntEnum):  # in the auditor's own __main__: not the saving script's Stage
    A = 1


def test_one_module_finds_and_reads_module_sources() -> None:
    """The one answer stays one: nothing else in the package locates a module's source or
    reads it with ast (migrate's second answer, `migrate/classes.py`, is gone)."""
    package = Path(global_kinds.__file__).resolve().parents[1]
    readers = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "PathFinder" in path.read_text() or "ast.parse(" in path.read_text()
    )
    assert readers == ["audit/module_source.py"]


def test_searching_adds_folders_only_inside_its_block(tmp_path) -> None:
    """The plugin's rootdir, the CLI's --path: a folder off sys.path, searched first."""
    (tmp_path / "off_path_mod.py").write_text(ENUM)
    global_kinds.clear_caches()
    assert global_kinds.kind_of("off_path_mod.Stage") == "unknown"
    with global_kinds.searching([tmp_path]):
        assert global_kinds.search_path()[0] == str(tmp_path)
        assert global_kinds.describe_global("off_path_mod.Stage").enum
    assert global_kinds.kind_of("off_path_mod.Stage") == "unknown"
