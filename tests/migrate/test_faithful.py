"""`pytest-ckpt migrate` is faithful or refuses by path: each migrated file loads with
weights_only=True exactly as torch.load(weights_only=False) loads its original (compared in
separate processes, `tests.migrate.faithful`), or the command exits 1 with one line per
refused path. Hostile pickles are written by hand and never executed.

Every file is written first and migrated in one CLI subprocess (`run_migrations`), and the
faithful pairs are described in one process per side: one torch import each, not one per
case.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import functools
import struct
import time
import warnings
import zipfile

import numpy as np
import pytest
import torch

from pytest_ckpt.checks.compare import diff_values
from tests.audit.conftest import torch_verdicts
from tests.audit.test_hostile import PROTO2, global_op, write_zip
from tests.migrate.faithful import describe_pairs, refused_paths, run_migrations
from tests.migrate.models import Net, Point, TreeNode

DEEP = 100_000


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _dict_of(**calls: bytes) -> bytes:
    """A pickle of {key: <the value each opcode run pushes>}."""
    body = b"}(" + b"".join(_text(key) + ops for key, ops in calls.items()) + b"u."
    return PROTO2 + body


def _tensors() -> dict:
    base = torch.arange(6.0).reshape(2, 3)
    ring: list = []
    ring.append(ring)  # a list that holds itself
    loop: dict = {}
    loop["pair"] = ([loop], loop)  # tuples around a cycle of dicts and lists
    dag: list = [1]
    for _ in range(40):  # 2**40 paths, 41 objects
        dag = [dag, dag]
    return {
        "conj": torch.tensor([1 + 2j, 3 - 1j]).conj(),
        "neg": torch.tensor([1.0, -2.0])._neg_view(),
        "grad": torch.ones(2, requires_grad=True),
        "frozen": torch.nn.Parameter(torch.zeros(2), requires_grad=False),
        "trained": torch.nn.Parameter(torch.ones(3)),
        "base": base,
        "view": base[1, 1:],
        "strided": base.t(),
        "ring": ring,
        "loop": loop,
        "dag": dag,
        "twice": [base, base],
        "counter": collections.Counter(a=2),
        "size": torch.Size([2, 3]),
        "state_dict": torch.nn.BatchNorm1d(2).state_dict(),  # an OrderedDict with _metadata
    }


def _big_endian(source, target) -> None:
    """`source` rewritten as a big-endian machine's torch.save writes it: byteorder "big",
    every storage's elements byte-swapped (complex numbers: each half)."""
    loaded = torch.load(source, weights_only=True)
    widths = [v.element_size() // (2 if v.is_complex() else 1) for v in loaded.values()]
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        keys = iter(widths)
        for info in src.infolist():
            body = src.read(info)
            if info.filename.endswith("/byteorder"):
                body = b"big"
            elif "/data/" in info.filename:
                width = next(keys)
                body = b"".join(body[i : i + width][::-1] for i in range(0, len(body), width))
            dst.writestr(info.filename, body)


def _duplicates(template, source, copies: int) -> None:
    with zipfile.ZipFile(template) as src, zipfile.ZipFile(source, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith("data/0"):
                for copy in range(copies):
                    with warnings.catch_warnings():  # zipfile: "Duplicate name", the point
                        warnings.simplefilter("ignore", UserWarning)
                        dst.writestr(info.filename, struct.pack("<2f", copy, copy))
            else:
                dst.writestr(info.filename, src.read(info))


def _huge_calls() -> dict[str, bytes]:
    return {
        "t": global_op("torch", "FloatTensor") + b"J" + struct.pack("<i", 268435456) + b"\x85R",
        "b": global_op("builtins", "bytearray") + b"J" + struct.pack("<i", 1 << 30) + b"\x85R",
        "ok": global_op("torch", "FloatTensor") + b"](G?\xf8\x00\x00\x00\x00\x00\x00e\x85R",
    }


def _write_cases(folder) -> dict[str, list]:
    """Every case's file; returns the migrate command lines, in the order they run."""
    runs: dict[str, list] = {}
    marker = folder / "ran"
    code = f"open({str(marker)!r}, 'w')"
    calls = _dict_of(
        print=global_op("builtins", "print") + _text("x") + b"\x85R",
        timeit=global_op("timeit", "timeit") + _text(code) + b"\x85R",
        pdb=global_op("pdb", "run") + _text(code) + b"\x85R",
    )
    runs["calls"] = [write_zip(folder / "calls.pt", calls), folder / "calls-out.pt"]
    hostile_name = _text("evil\x1b[2J") + _text("f\nx") + b"\x93" + _text("v") + b"\x85R"
    runs["escape"] = [
        write_zip(folder / "esc.pt", _dict_of(**{"k\x1b": hostile_name})),
        folder / "e",
    ]
    torch.save(_tensors(), folder / "tensors.pt")
    runs["tensors"] = [folder / "tensors.pt", folder / "tensors-out.pt"]
    torch.save(
        {
            "f": torch.tensor([1.5, -2.25]),
            "i": torch.tensor([1, 256, -3], dtype=torch.int16),
            "c": torch.tensor([1 + 2j]),
            "d": torch.tensor([3.0], dtype=torch.float64),
        },
        folder / "little.pt",
    )
    _big_endian(folder / "little.pt", folder / "big.pt")
    runs["big"] = [folder / "big.pt", folder / "big-out.pt"]
    torch.save({"w": torch.tensor([1.0, 2.0])}, folder / "one.pt")
    for copies in (2, 3, 4, 5):
        _duplicates(folder / "one.pt", folder / f"dup{copies}.pt", copies)
        runs[f"dup{copies}"] = [folder / f"dup{copies}.pt", folder / f"dup{copies}-out.pt"]
    torch.manual_seed(0)
    torch.save(Net(), folder / "model.pt")
    runs["model"] = [folder / "model.pt", folder / "model-out.pt"]
    runs["model-trust"] = [folder / "model.pt", folder / "model-trust.pt", "--trust"]
    inside: list = []
    pair = (inside, 1)
    inside.append(pair)  # reached from the tuple first, pickle writes it with POP
    torch.save({"cycle": pair, "fine": [inside]}, folder / "cycle.pt")
    runs["cycle"] = [folder / "cycle.pt", folder / "cycle-out.pt"]
    torch.save(
        {"array": np.arange(3), "f": functools.partial(int, base=2), "ok": 1}, folder / "np.pt"
    )
    runs["np"] = [folder / "np.pt", folder / "np-out.pt"]
    deep = PROTO2 + b"](" * (DEEP - 1) + b"]" + b"e" * (DEEP - 1) + b"."
    runs["deep"] = [write_zip(folder / "deep.pt", deep), folder / "deep-out.pt"]
    shallow: list = []
    for _ in range(300):
        shallow = [shallow, {"k": shallow}]
    torch.save(shallow, folder / "shallow.pt")
    runs["shallow"] = [folder / "shallow.pt", folder / "shallow-out.pt"]
    root = TreeNode("root")
    for name in ("a", "b"):
        root.children[name] = TreeNode(name, parent=root)
    torch.save({"cfg": root}, folder / "tree.pt")
    runs["tree"] = [folder / "tree.pt", folder / "tree-out.pt"]
    config = global_op("omegaconf.dictconfig", "DictConfig") + b")\x81}(" + _text("_content")
    config += b"}ub"  # NEWOBJ, then BUILD with {"_content": {}}
    runs["omega"] = [write_zip(folder / "omega.pt", _dict_of(cfg=config)), folder / "omega-out.pt"]
    runs["huge"] = [write_zip(folder / "huge.pt", _dict_of(**_huge_calls())), folder / "huge-o.pt"]
    listed = _dict_of(ok=_huge_calls()["ok"])
    runs["listed"] = [write_zip(folder / "listed.pt", listed), folder / "listed-out.pt"]
    torch.save(
        {
            "decimal": decimal.Decimal("1.5"),
            "fraction": fractions.Fraction(1, 3),
            "int64": np.int64(3),
            "tz": datetime.timezone.utc,
            "point": Point(1, 2),
            "fine": [1, 2],
        },
        folder / "values.pt",
    )
    runs["static"] = [folder / "values.pt", folder / "static.pt"]
    runs["trusted"] = [folder / "values.pt", folder / "trusted.pt", "--trust"]
    torch.save({"w": torch.ones(2), "when": datetime.date(2026, 1, 2)}, folder / "in.pt")
    (folder / "existing.pt").write_bytes(b"precious")
    runs["exists"] = [folder / "in.pt", folder / "existing.pt"]
    runs["force"] = [folder / "in.pt", folder / "existing.pt", "--force"]
    return runs


FAITHFUL = ("tensors", "big", "shallow", "tree", "listed")
DUPLICATED = ("dup2", "dup3", "dup4", "dup5")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("migrate")
    argvs = _write_cases(folder)
    started = time.perf_counter()
    results = dict(zip(argvs, run_migrations(list(argvs.values())), strict=True))
    seconds = time.perf_counter() - started
    pairs = [(argvs[name][0], argvs[name][1]) for name in FAITHFUL]
    for name in FAITHFUL:
        assert results[name].returncode == 0, (name, results[name].stderr)
    return folder, argvs, results, describe_pairs(pairs), seconds


def test_a_call_of_a_function_is_never_an_enum_member(batch) -> None:
    folder, argvs, results, _, _ = batch
    result = results["calls"]
    assert result.returncode == 1, result.stderr
    assert refused_paths(result.stderr) == ["root['print']", "root['timeit']", "root['pdb']"]
    # A plain function is named as one; a known code-running one (the auditor's list) says so.
    assert "builtins.print is a function: a call of it is code, not an Enum member" in result.stderr
    for name in ("timeit.timeit", "pdb.run"):
        assert f"calls {name}, which runs code the file chooses" in result.stderr
    assert "Enum member ->" not in result.stderr
    assert "converted" not in result.stdout and not argvs["calls"][1].exists()
    assert not (folder / "ran").exists()


def test_names_and_keys_from_the_file_are_printed_escaped(batch) -> None:
    result = batch[2]["escape"]
    assert result.returncode == 1, result.stderr
    assert "\x1b" not in result.stderr and "f\nx" not in result.stderr
    assert "root['k\\x1b']: cannot tell whether evil\\x1b[2J.f\\nx is an Enum" in result.stderr


@pytest.mark.parametrize("case", FAITHFUL)
def test_the_migrated_file_loads_exactly_as_the_original(batch, case) -> None:
    """Values, dtypes, strides, conj/neg bits, requires_grad, Parameter vs Tensor, shared
    storages and shared containers (cycles, a 2**40-path DAG of 41 lists), a big-endian file
    (byte-swapped as torch does), a config tree with parent links (each node once)."""
    original, migrated = batch[3][batch[1][case][0].name]
    assert migrated == original


@pytest.mark.parametrize("case", DUPLICATED)
def test_a_zip_with_a_member_written_twice_is_refused_and_nothing_is_written(batch, case) -> None:
    """torch's reader and Python's zipfile can read different copies of a repeated member:
    no one verdict (and no one migration) holds for such a file."""
    _, argvs, results, _, _ = batch
    result = results[case]
    assert result.returncode == 2, result.stderr
    assert "zip member 'data/0' appears" in result.stderr
    assert not argvs[case][1].exists()


def test_sharing_is_kept_and_a_shared_dag_converts_in_linear_time(batch) -> None:
    _, argvs, _, _, seconds = batch
    assert seconds < 120  # every case; the DAG alone would never end path by path
    tensors = torch.load(argvs["tensors"][1], weights_only=True)
    assert tensors["ring"][0] is tensors["ring"] and tensors["twice"][0] is tensors["twice"][1]
    level = tensors["dag"]
    for _ in range(40):
        assert level[0] is level[1]
        level = level[0]
    tree = torch.load(argvs["tree"][1], weights_only=True)["cfg"]
    assert tree["children"]["a"]["parent"] is tree


def test_a_whole_model_keeps_its_config_and_every_submodules_arguments(batch) -> None:
    _, argvs, results, _, _ = batch
    result = results["model"]
    assert result.returncode == 0, result.stderr
    assert "converted root: tests.migrate.models.Net module -> state_dict + config" in result.stdout
    record = torch.load(argvs["model"][1], weights_only=True)
    assert record["class"] == "tests.migrate.models.Net"
    assert record["config"] == {
        "training": True,
        "config": {"width": 3, "act": "relu", "sizes": [2, 3]},
        "tags": ["a", "b"],
        "scale": 0.5,
    }
    assert record["modules"]["body"] == {
        "class": "torch.nn.modules.linear.Linear",
        "config": {"training": True, "in_features": 2, "out_features": 3},
    }
    norm = record["modules"]["head.0"]
    assert norm["class"] == "torch.nn.modules.normalization.LayerNorm"
    assert norm["config"]["eps"] == 1e-3 and norm["config"]["normalized_shape"] == (3,)
    assert list(record["modules"]) == ["body", "head", "head.0", "head.1"]
    torch.manual_seed(0)
    expected = Net().state_dict()
    assert list(record["state_dict"]) == list(expected)
    for name, tensor in expected.items():
        assert torch.equal(record["state_dict"][name], tensor), name
    Net().load_state_dict(record["state_dict"])  # strict: nothing missing or unexpected
    assert results["model-trust"].returncode == 0, results["model-trust"].stderr
    trusted = torch.load(argvs["model-trust"][1], weights_only=True)
    assert diff_values(record, trusted) == []  # --trust: the same record


def test_a_tuple_inside_its_own_cycle_is_refused_as_torch_cannot_load_it(batch) -> None:
    _, argvs, results, _, _ = batch
    result = results["cycle"]
    assert result.returncode == 1, result.stderr
    assert refused_paths(result.stderr) == ["root['cycle'][0][0]"]
    assert "a tuple that contains itself" in result.stderr and not argvs["cycle"][1].exists()
    source = argvs["cycle"][0]
    assert torch_verdicts([source]) == {str(source): False}  # torch cannot load it either


def test_numpy_arrays_and_partial_are_refused_by_path_not_called_malformed(batch) -> None:
    _, argvs, results, _, _ = batch
    result = results["np"]
    assert result.returncode == 1, result.stderr
    assert refused_paths(result.stderr) == ["root['array']", "root['f']"]
    assert "torch.from_numpy" in result.stderr and "functools.partial" in result.stderr
    assert "malformed" not in result.stderr and not argvs["np"][1].exists()


def test_deep_nesting_is_refused_without_recursion_or_traceback(batch) -> None:
    """100,000 nested lists convert without recursion; torch.save cannot write them, so the
    command refuses (the 300-deep case converts: it is among the faithful ones)."""
    _, argvs, results, _, _ = batch
    result = results["deep"]
    assert result.returncode == 1, result.stderr
    assert "nested deeper than torch.save can write" in result.stderr
    assert "Traceback" not in result.stderr and not argvs["deep"][1].exists()


def test_omegaconf_objects_are_refused_with_the_auditors_fix(batch) -> None:
    result = batch[2]["omega"]
    assert result.returncode == 1
    assert refused_paths(result.stderr) == ["root['cfg']"]
    assert "OmegaConf.to_container(cfg, resolve=True)" in result.stderr


def test_allow_listed_constructors_cannot_allocate_what_the_file_does_not_hold(batch) -> None:
    """A 644-byte torch.FloatTensor(268435456) is 1 GiB of uninitialised memory: refused
    before it is allocated; a tensor built from a list converts (a faithful case)."""
    _, argvs, results, _, _ = batch
    result = results["huge"]
    assert result.returncode == 1, result.stderr
    assert refused_paths(result.stderr) == ["root['t']", "root['b']"]
    assert "torch.FloatTensor(268435456,) allocates 1073741824 bytes" in result.stderr
    assert "bytearray(1073741824) allocates" in result.stderr
    assert not argvs["huge"][1].exists()
    assert torch.load(argvs["listed"][1], weights_only=True)["ok"].tolist() == [1.5]


def test_trust_and_static_give_the_same_refusals(batch) -> None:
    _, argvs, results, _, _ = batch
    static, trusted = results["static"], results["trusted"]
    assert (static.returncode, trusted.returncode) == (1, 1), (static.stderr, trusted.stderr)
    expected = ["root['decimal']", "root['fraction']", "root['int64']", "root['tz']"]
    expected.append("root['point']")
    assert refused_paths(static.stderr) == expected
    assert refused_paths(trusted.stderr) == expected
    assert not argvs["static"][1].exists() and not argvs["trusted"][1].exists()


def test_an_existing_out_is_replaced_only_with_force(batch) -> None:
    _, argvs, results, _, _ = batch
    out = argvs["exists"][1]
    assert results["exists"].returncode == 1
    assert f"{out} exists; not replaced (fix: pass --force" in results["exists"].stderr
    assert results["force"].returncode == 0, results["force"].stderr
    assert torch.load(out, weights_only=True)["when"] == "2026-01-02"


def test_a_failed_audit_leaves_an_existing_out_untouched(tmp_path, monkeypatch, capsys) -> None:
    """The audit runs on the temporary file, before it replaces OUT."""
    from pytest_ckpt import cli
    from pytest_ckpt.audit import Report
    from pytest_ckpt.migrate import workflow

    source, out = tmp_path / "in.pt", tmp_path / "out.pt"
    torch.save({"w": torch.ones(2)}, source)
    out.write_bytes(b"precious")
    audited = []

    def failing_audit(path, **kwargs):
        audited.append(path)
        return Report(path=str(path), format="zip", findings=(), error="planted failure")

    monkeypatch.setattr(workflow, "audit_file", failing_audit)
    assert cli.main(["migrate", str(source), str(out), "--force"]) == 1
    assert "the converted file would not load (planted failure)" in capsys.readouterr().err
    assert out.read_bytes() == b"precious" and audited and audited[0] != out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.pt", "out.pt"]
