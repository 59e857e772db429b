"""Advice is a claim, and each claim is applied here against the real torch in a subprocess:
every offered `safe_globals` list makes torch load the file (and no name in it can be left
out); every fix the text names, carried out, makes a file torch loads; code-running globals
are never offered, whatever their call looks like."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from pytest_ckpt.audit import audit_file
from pytest_ckpt.audit.render import render_text
from tests.audit import advice_fixtures as fx
from tests.audit.conftest import torch_verdicts
from tests.audit.test_hostile import PROTO2, global_op, write_zip
from tests.forked_runs import run_python

np = pytest.importorskip("numpy")
REPO = pathlib.Path(__file__).resolve().parents[2]

APPLY = """
import importlib, json, sys, warnings
import torch
warnings.simplefilter("ignore")

def resolve(dotted):
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            value = getattr(value, attr)
        return value
    raise LookupError(dotted)

verdicts = {}
for key, (path, names) in json.loads(sys.argv[1]).items():
    try:
        with torch.serialization.safe_globals([resolve(n) for n in names]):
            torch.load(path, weights_only=True)
        verdicts[key] = "ok"
    except Exception as err:  # the verdict is all we want
        verdicts[key] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
print(json.dumps(verdicts))
"""


def torch_with_allowlists(
    runs: dict[str, tuple[pathlib.Path, list[str]]], *, pythonpath: str | None = None
) -> dict[str, str]:
    """torch.load(weights_only=True) of each file under safe_globals(names), the names
    imported by name, in one fresh process ("ok" or the error's first line)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [pythonpath, str(REPO)]))}
    result = subprocess.run(
        [sys.executable, "-c", APPLY, json.dumps({k: [str(p), n] for k, (p, n) in runs.items()})],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env=env,
    )
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def real_files(tmp_path_factory) -> dict[str, pathlib.Path]:
    return fx.save_real_objects(tmp_path_factory.mktemp("real"))


# No allowlist can make torch load these: each holds an operation torch refuses whatever is
# allowed (extending a deque, setting items of a defaultdict) or a function.
NO_LIST = {"defaultdict", "deque", "partial", "function", "numpy_generator"}


def test_every_offered_allowlist_loads_and_none_of_its_names_can_be_left_out(real_files):
    reports = {stem: audit_file(path) for stem, path in real_files.items()}
    assert {stem for stem, r in reports.items() if r.safe_globals is None} == NO_LIST
    runs = {}
    for stem, report in reports.items():
        if report.safe_globals is None:
            continue
        assert not report.loadable and report.safe_globals, stem
        assert all(f.allowlist_helps for f in report.findings), stem
        runs[stem] = (real_files[stem], report.safe_globals)
        for name in report.safe_globals:  # one name short: torch refuses, and so do we
            fewer = [n for n in report.safe_globals if n != name]
            runs[f"{stem} without {name}"] = (real_files[stem], fewer)
            assert not audit_file(real_files[stem], allow=fewer).loadable, (stem, name)
        assert audit_file(real_files[stem], allow=report.safe_globals).loadable, stem
    verdicts = torch_with_allowlists(runs)
    for key, verdict in verdicts.items():
        assert (verdict == "ok") is (" without " not in key), (key, verdict)


def test_no_list_files_stay_refused_with_every_advisable_name_allowed(real_files):
    """None means none: allowing every non-function global the file names does not help."""
    runs = {}
    for stem in sorted(NO_LIST):
        report = audit_file(real_files[stem])
        assert not any(f.allowlist_helps for f in report.findings), stem
        names = sorted({n for f in report.findings for n in f.needs})
        runs[stem] = (real_files[stem], names)
    assert all(v != "ok" for v in torch_with_allowlists(runs).values())


def test_a_numpy_array_needs_its_concrete_dtype_class_which_the_file_never_names(real_files):
    path = real_files["numpy_array"]
    report = audit_file(path)
    assert report.safe_globals is not None
    assert "numpy.dtypes.UInt32DType" in report.safe_globals
    assert b"UInt32DType" not in path.read_bytes()
    named = [n for n in report.safe_globals if n != "numpy.dtypes.UInt32DType"]
    cli = [sys.executable, "-m", "pytest_ckpt.cli", "audit", str(path)]
    allow = [arg for name in named for arg in ("--allow", name)]
    assert run_python([*cli, *allow], cwd=REPO, capture_output=True).returncode == 1
    assert audit_file(path, allow=[*named, "numpy.dtypes.UInt32DType"]).loadable


@pytest.fixture(scope="module")
def code_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("code")
    marker = folder / "ran"
    return fx.save_code_running(folder, marker), marker


def test_code_running_globals_are_never_offered_and_never_called_enum_members(code_files):
    files, marker = code_files
    for name, path in files.items():
        report = audit_file(path)
        assert not report.loadable and report.safe_globals is None, name
        (finding,) = [f for f in report.findings if f.global_name == name]
        assert finding.needs == () and not finding.allowlist_helps, name
        assert f"never allow-list {name}" in finding.fix and "Enum" not in finding.fix, name
        text = render_text([report])
        assert "would be enough" not in text and "no torch.serialization.safe_globals" in text
    assert not any(torch_verdicts(list(files.values())).values())
    assert not marker.exists()


def _fixed(stem: str):
    """What the state becomes when the advice given for it is carried out."""
    state = fx.real_objects()[stem]()
    (key,) = [k for k in state if k != "by_stage"] if stem == "enum_value_and_key" else state
    value = state[key]
    if stem == "numpy_array":
        return {key: torch.from_numpy(value)}
    if stem == "numpy_legacy_rng":
        return {key: (value[0], torch.from_numpy(value[1]), *map(float, value[2:]))}
    if stem == "numpy_generator":
        return {key: value.bit_generator.state}
    if stem == "float_subclass_lr":
        value["param_groups"][0]["lr"] = float(value["param_groups"][0]["lr"])
        return state
    if stem == "module":
        return {key: {"config": {}, "state_dict": value.state_dict()}}
    if stem == "partial":
        return {key: f"{value.func.__module__}.{value.func.__qualname__}"}
    if stem == "function":
        return {key: f"{value.__module__}.{value.__qualname__}"}
    simple = {
        "numpy_float64": float,
        "numpy_float32": float,
        "enum": lambda v: v.value,
        "path": str,
        "dataclass": dataclasses.asdict,
        "defaultdict": dict,
        "deque": list,
        "datetime": lambda v: v.isoformat(),
        "namespace": vars,
    }
    return {key: simple[stem](value)}


ADVICE = {
    "numpy_array": "torch.from_numpy(a)",
    "numpy_float64": "float(x)",
    "numpy_float32": "float(x)",
    "numpy_legacy_rng": "torch.from_numpy(state[1])",
    "numpy_generator": "rng.bit_generator.state",
    "enum": "store .value",
    "path": "str(path)",
    "dataclass": "to_dict()",
    "module": "store module.state_dict() plus its constructor config",
    "float_subclass_lr": "store float(x)",
    "defaultdict": "dict(d)",
    "deque": "list(d)",
    "partial": "callable's name",
    "function": "function's dotted name",
    "datetime": "isoformat()",
    "namespace": "vars(namespace)",
}


def test_the_fix_each_finding_names_makes_a_file_torch_loads(real_files, tmp_path):
    fixed = {}
    for stem, advice in ADVICE.items():
        report = audit_file(real_files[stem])
        first = min(report.findings, key=lambda f: len(f.path))
        assert advice in first.fix, (stem, first.fix)
        assert "to_dict()/from_dict()" not in first.fix or stem == "dataclass", stem
        torch.save(_fixed(stem), fixed.setdefault(stem, tmp_path / f"{stem}.pt"))
        assert audit_file(fixed[stem]).loadable, stem
    assert all(torch_verdicts(list(fixed.values())).values())


def test_a_module_subclass_is_advised_state_dict_and_is_loadable_once_allow_listed(real_files):
    """The Linear inside is replaced with the module (state_dict()): named on its finding,
    not a finding of its own; allow-listing the module for this object needs both."""
    report = audit_file(real_files["module"])
    (finding,) = report.findings
    assert finding.path == "root['net']" and "state_dict()" in finding.fix
    assert "holding torch.nn.modules.linear.Linear" in finding.detail
    linear = "torch.nn.modules.linear.Linear"
    assert finding.needs == ("tests.audit.advice_fixtures.TinyNet", linear)
    assert report.safe_globals == [
        "tests.audit.advice_fixtures.TinyNet",
        "torch.nn.modules.linear.Linear",
    ]


def test_no_pickle_internals_in_paths_or_names(real_files):
    for stem in ("defaultdict", "numpy_array", "numpy_float64", "partial"):
        (finding,) = audit_file(real_files[stem]).findings
        assert finding.path.startswith("root[") and "(args)" not in finding.path, stem
        assert "__setstate__" not in finding.path, stem
    (dd,) = audit_file(real_files["defaultdict"]).findings
    assert dd.global_name == "collections.defaultdict" and "dict(d)" in dd.fix


def test_every_path_of_a_shared_object_is_named(real_files):
    (enum_finding,) = audit_file(real_files["enum_value_and_key"]).findings
    assert (enum_finding.path, enum_finding.also_at) == (
        "root['stage']",
        ["root['by_stage'].keys()[0]"],
    )
    (path_finding,) = audit_file(real_files["path_twice"]).findings
    assert (path_finding.path, path_finding.also_at) == ("root['dir']", ["root['dirs'][0]"])
    text = render_text([audit_file(real_files["path_twice"])])
    assert "also at root['dirs'][0]" in text


def test_a_name_is_told_class_or_function_from_its_source_never_imported(tmp_path):
    package = tmp_path / "site"
    (package / "userpkg").mkdir(parents=True)
    marker = tmp_path / "imported"
    (package / "userpkg" / "__init__.py").write_text(f"open({str(marker)!r}, 'w')\n")
    (package / "userpkg" / "kinds.py").write_text(
        f"import enum\nopen({str(marker)!r}, 'w')\n"
        "class Color(enum.Enum):\n    RED = 1\n"
        "def launch(command):\n    raise SystemExit(command)\n"
    )
    files = {}
    for name, arg in (("Color", b"K\x01"), ("launch", b"X\x01\x00\x00\x00x")):
        payload = PROTO2 + b"}X\x01\x00\x00\x00v" + global_op("userpkg.kinds", name)
        payload += arg + b"\x85Rs."
        files[name] = write_zip(tmp_path / f"{name}.pt", payload)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), str(REPO)])}
    out = run_python(
        [sys.executable, "-m", "pytest_ckpt.cli", "audit", "--json", *map(str, files.values())],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    color, launch = json.loads(out.stdout)["files"]
    assert not marker.exists()
    assert color["safe_globals"] == ["userpkg.kinds.Color"]
    assert launch["safe_globals"] is None
    assert "never allow-list a function" in launch["findings"][0]["fix"]
    verdicts = torch_with_allowlists(
        {"Color": (files["Color"], color["safe_globals"])}, pythonpath=str(package)
    )
    assert verdicts == {"Color": "ok"}


def test_the_auditors_own_main_module_never_answers_for_the_savers():
    """`__main__.X` in a file is the saving script's X, not ours."""
    from pytest_ckpt.audit.global_kinds import kind_of

    sys.modules["__main__"].Stage = fx.Stage  # type: ignore[attr-defined]
    try:
        assert kind_of("__main__.Stage") == "unknown"
    finally:
        del sys.modules["__main__"].Stage  # type: ignore[attr-defined]
    assert kind_of("tests.audit.advice_fixtures.Stage") == "class"
    assert kind_of("tests.audit.advice_fixtures._fixed") == "unknown"  # no such name
    assert kind_of("timeit.timeit") == kind_of("torch.hub.load") == "code"


def test_the_cli_refuses_to_allow_a_code_running_name_and_says_why(tmp_path):
    path = tmp_path / "ok.pt"
    torch.save({"w": torch.zeros(1)}, path)
    result = run_python(
        [sys.executable, "-m", "pytest_ckpt.cli", "audit", str(path), "--allow", "timeit.timeit"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "refusing to allow timeit.timeit" in result.stderr


def test_a_name_the_auditor_cannot_place_is_never_offered_and_the_text_says_why(tmp_path):
    payload = PROTO2 + b"}X\x01\x00\x00\x00v" + global_op("nowhere_pkg.kinds", "Color")
    payload += b"K\x01\x85Rs."  # {'v': nowhere_pkg.kinds.Color(1)}: an Enum, or a function
    report = audit_file(write_zip(tmp_path / "unplaced.pt", payload))
    assert report.safe_globals is None
    (finding,) = report.findings
    assert not finding.needs and "cannot tell" in finding.fix
    assert "looks like an Enum member" not in finding.fix
    text = render_text([report])
    assert "none offered: the auditor cannot tell whether nowhere_pkg.kinds.Color" in text
    assert "would be enough" not in text


def test_source_reading_trusts_only_unconditional_top_level_definitions(tmp_path, monkeypatch):
    from pytest_ckpt.audit import global_kinds

    (tmp_path / "placed_mod.py").write_text(
        "import enum\nraise SystemExit('imported')\nclass A: pass\ndef f(): pass\n"
        "B = enum.Enum('B', 'x')\nif True:\n    class C: pass\nclass D: pass\nD = print\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    global_kinds.clear_caches()
    kinds = [global_kinds.kind_of(f"placed_mod.{name}") for name in "AfBCD"]
    assert kinds == ["class", "function", "unknown", "unknown", "unknown"]
    assert "placed_mod" not in sys.modules


def test_an_object_inside_a_set_has_a_path_in_words(real_files):
    report = audit_file(real_files["sets"])  # its list is applied with the others'
    stage = next(f for f in report.findings if f.global_name.endswith(".Stage"))
    assert (stage.path, stage.also_at) == ("root['s'][...]", ["root['f'][...]"])


def test_a_module_from_the_savers_main_is_still_advised_state_dict(tmp_path, monkeypatch):
    """An nn.Module the auditor cannot place (a training script's __main__) is told by its
    pickled state (_parameters, _buffers, _modules), not by its name."""
    monkeypatch.setattr(fx.TinyNet, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], "TinyNet", fx.TinyNet, raising=False)
    path = tmp_path / "script_model.pt"
    torch.save({"net": fx.TinyNet()}, path)
    report = audit_file(path)
    top = next(f for f in report.findings if f.path == "root['net']")
    assert top.global_name == "__main__.TinyNet"
    assert top.fix.startswith("store module.state_dict() plus its constructor config")
    assert report.safe_globals is None and not top.needs
