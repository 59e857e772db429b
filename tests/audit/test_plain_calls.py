"""The calls ordinary files hold are judged statically (no stage 2), and judged as torch does.

Each ordinary object below, saved by torch.save beside a tensor, must audit ok without
torch's own unpickler (stage 2, counted by wrapping the audit's calls into `oracle`). Each
odd call (a Size of floats, a device string torch rejects, complex("zz"), bytes of chars
past 255, a set of lists, a Parameter of ints that requires grad, ...) must get the verdict
`torch.load(weights_only=True)` gives in a fresh process, and reach stage 2 exactly where
the static run cannot judge it (issue 20)."""

from __future__ import annotations

import collections
import struct

import pytest
import torch

import pytest_ckpt.audit as audit
from pytest_ckpt.audit.allowlist import load_allowlist
from tests.audit.conftest import torch_verdicts
from tests.audit.test_hostile import PROTO2, global_op, write_zip
from tests.audit.test_torch_checks import call, storage, tensor, uni

ALLOWLIST = load_allowlist()

ORDINARY = {
    "size": torch.Size([2, 3]),
    "empty_size": torch.Size([]),
    "device_cpu": torch.device("cpu"),
    "device_cuda_1": torch.device("cuda", 1),
    "device_meta": torch.device("meta"),
    "complex": complex(1, -2.5),
    "bytes": b"\x00ab\xff",
    "bytearray": bytearray(b"xy"),
    "set": {1, 2.5, "a", None, (1, 2)},
    "empty_set": set(),
    "counter": collections.Counter(a=2, b=1),
    "parameter": torch.nn.Parameter(torch.ones(2)),
    "frozen_parameter": torch.nn.Parameter(torch.ones(2), requires_grad=False),
    "int_parameter": torch.nn.Parameter(torch.ones(2, dtype=torch.int64), requires_grad=False),
    "dtypes": [torch.float32, torch.int8, torch.bfloat16],
    "sizes_and_devices": {"shapes": [torch.Size([1]), torch.Size([4, 4])], "at": "cpu"},
}


@pytest.fixture
def stage2_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The audit's calls into torch's unpickler (`oracle`), by file."""
    calls: list[str] = []
    real = audit.zip_refusal

    def counted(pickle: bytes, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append("zip")
        return real(pickle, *args, **kwargs)

    monkeypatch.setattr(audit, "zip_refusal", counted)
    return calls


def test_ordinary_calls_audit_ok_without_torchs_unpickler(tmp_path, stage2_calls) -> None:
    paths = {}
    for name, value in ORDINARY.items():
        paths[name] = tmp_path / f"{name}.pt"
        torch.save({"w": torch.zeros(2), "x": value}, paths[name])
    went_to_stage2 = []
    for name, path in paths.items():
        before = len(stage2_calls)
        report = audit.audit_file(path, allowlist=ALLOWLIST)
        assert report.loadable, (name, report.findings)
        if len(stage2_calls) > before:
            went_to_stage2.append(name)
    assert went_to_stage2 == []
    assert all(torch_verdicts(list(paths.values())).values())  # and torch loads them


PARAMETER = "torch._utils._rebuild_parameter"
HOOKS = global_op("collections", "OrderedDict") + b")R"


def long1(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def floats(*values: float) -> bytes:
    return b"".join(b"G" + struct.pack(">d", v) for v in values)


# name -> (the value in a dict, whether stage 2 must run for it)
ODD_CALLS = {
    "size_of_ints": (call("torch.Size", b"(K\x02K\x03t"), False),
    "size_negative": (call("torch.Size", b"(J" + struct.pack("<i", -1) + b"t"), False),
    "size_of_an_int": (call("torch.Size", b"K\x05"), True),
    "size_of_floats": (call("torch.Size", b"(" + floats(1.5) + b"t"), True),
    "size_of_strings": (call("torch.Size", b"(" + uni("a") + b"t"), True),
    "size_two_args": (call("torch.Size", b"(K\x02tK\x03\x85"), True),
    "size_huge": (call("torch.Size", b"(" + long1(2**70) + b"t"), False),
    "size_newobj": (global_op("torch", "Size") + b"((K\x02tt\x81", False),
    "size_of_a_list": (call("torch.Size", b"](K\x02e"), True),
    "device_bogus": (call("torch.device", uni("bogus")), True),
    "device_negative": (call("torch.device", uni("cuda:-1")), True),
    "device_index_str": (call("torch.device", uni("cpu") + uni("x")), True),
    "device_huge_index": (call("torch.device", uni("cuda") + long1(2**40)), False),
    "device_huger_index": (call("torch.device", uni("cuda") + long1(2**70)), True),
    "device_no_args": (call("torch.device"), True),
    "device_with_index": (call("torch.device", uni("cuda") + b"K\x01"), False),
    "complex_zz": (call("builtins.complex", uni("zz")), True),
    "complex_text": (call("builtins.complex", uni("1+2j")), False),
    "complex_text_and_number": (call("builtins.complex", uni("1") + b"K\x02"), True),
    "complex_overflow": (call("builtins.complex", long1(10**400)), True),
    "complex_newobj": (global_op("builtins", "complex") + b"(" + floats(1, 2) + b"t\x81", False),
    "bytes_past_latin1": (call("_codecs.encode", uni("\u0100"), uni("latin1")), True),
    "bytes_utf8": (call("_codecs.encode", uni("ab"), uni("utf-8")), True),
    "bytes_rot13": (call("_codecs.encode", uni("ab"), uni("rot13")), True),
    "bytes_one_arg": (call("_codecs.encode", uni("ab")), True),
    "bytes_latin1": (call("_codecs.encode", uni("a\xff"), uni("latin1")), False),
    "bytearray_of_int": (call("builtins.bytearray", b"K\x05"), True),
    "bytearray_of_text": (call("builtins.bytearray", uni("ab"), uni("latin-1")), False),
    "bytearray_bad_encoding": (call("builtins.bytearray", uni("ab"), uni("nope")), True),
    "set_of_lists": (call("builtins.set", b"](]e"), True),
    "set_of_an_int": (call("builtins.set", b"K\x01"), True),
    "set_of_a_dict": (call("builtins.set", b"}"), True),
    "set_two_args": (call("builtins.set", b"]]"), True),
    "set_of_primitives": (call("builtins.set", b"](K\x01" + uni("a") + b"Ne"), False),
    "empty_set_opcode": (b"\x8f", False),
    "counter_of_an_int": (call("collections.Counter", b"K\x05"), True),
    "counter_of_a_dict": (call("collections.Counter", b"}" + uni("a") + b"K\x02s"), False),
    "parameter_int_requires_grad": (
        call(PARAMETER, tensor(numel=1, kind="LongStorage", size=b"K\x01\x85") + b"\x88" + HOOKS),
        True,
    ),
    "parameter_int_frozen": (
        call(PARAMETER, tensor(numel=1, kind="LongStorage", size=b"K\x01\x85") + b"\x89" + HOOKS),
        False,
    ),
    "parameter_float_requires_grad": (call(PARAMETER, tensor() + b"\x88" + HOOKS), False),
    "parameter_grad_as_int": (call(PARAMETER, tensor() + b"K\x01" + HOOKS), True),
    "parameter_of_a_size": (call(PARAMETER, call("torch.Size", b")") + b"\x88" + HOOKS), True),
    "parameter_two_args": (call(PARAMETER, tensor() + b"\x88"), True),
    "parameter_hooks_list": (call(PARAMETER, tensor() + b"\x88]"), True),
    "parameter_with_empty_state": (
        call(PARAMETER + "_with_state", tensor() + b"\x88" + HOOKS + b"N"),
        False,
    ),
    "parameter_with_state": (
        call(PARAMETER + "_with_state", tensor() + b"\x88" + HOOKS + b"}" + uni("data") + b"Ns"),
        True,
    ),
}


def test_odd_calls_get_torchs_verdict_and_stage2_where_needed(tmp_path, stage2_calls) -> None:
    paths, reached = {}, {}
    for name, (value, _expected) in ODD_CALLS.items():
        payload = PROTO2 + b"}" + uni("x") + value + b"s."  # data/0: 2 floats or 1 long
        paths[name] = write_zip(tmp_path / f"{name}.pt", payload)
    reports = {}
    for name, path in paths.items():
        before = len(stage2_calls)
        reports[name] = audit.audit_file(path, allowlist=ALLOWLIST)
        reached[name] = len(stage2_calls) > before
    torch_says = torch_verdicts(list(paths.values()))
    wrong = [
        f"{name}: audit={reports[name].loadable} torch={torch_says[str(path)]}"
        for name, path in paths.items()
        if reports[name].loadable != torch_says[str(path)]
    ]
    assert wrong == []
    assert {name: reached[name] for name in ODD_CALLS} == {
        name: expected for name, (_value, expected) in ODD_CALLS.items()
    }


def view(size: bytes, stride: bytes, offset: bytes = b"K\x00") -> bytes:
    """A `_rebuild_tensor_v2` of write_zip's storage with the view's fields given as opcodes."""
    return (
        global_op("torch._utils", "_rebuild_tensor_v2")
        + b"(" + storage() + offset + size + stride + b"\x89" + HOOKS + b"tR"
    )  # fmt: skip


INT31 = b"J" + struct.pack("<i", 2**31 - 1)
# Views the static run may not call in bounds: torch's set_ takes sizes, strides and the
# offset as int64 (past it: "Overflow when unpacking long"), and its numel check multiplies
# the sizes in order and refuses an overflow even where a later size is 0.
ODD_VIEWS = {
    "size_past_int64_then_zero": view(b"(" + long1(2**64) + b"K\x00t", b"(K\x01K\x01t"),
    "stride_past_int64": view(b"(K\x01t", b"(" + long1(2**70) + b"t"),
    "stride_past_int64_empty": view(b"(K\x00t", b"(" + long1(2**70) + b"t"),
    "offset_past_int64_empty": view(b"(K\x00t", b"(K\x01t", long1(2**70)),
    "offset_far_empty": view(b"(K\x00t", b"(K\x01t", long1(2**40)),  # torch loads it
    "sizes_overflow_then_zero": view(b"(" + INT31 * 3 + b"K\x00t", b"(" + b"K\x01" * 4 + b"t"),
    "sizes_zero_then_big": view(b"(K\x00" + INT31 * 3 + b"t", b"(" + b"K\x01" * 4 + b"t"),
    "long_sizes_overflow_then_zero": view(
        b"(" + long1(2**40) * 2 + b"K\x00t", b"(" + b"K\x01" * 3 + b"t"
    ),
}


def test_views_past_int64_get_torchs_verdict(tmp_path) -> None:
    paths = {}
    for name, value in ODD_VIEWS.items():
        payload = PROTO2 + b"}" + uni("x") + value + b"s."
        paths[name] = write_zip(tmp_path / f"{name}.pt", payload)
    torch_says = torch_verdicts(list(paths.values()))
    wrong = [
        f"{name}: audit={loadable} torch={torch_says[str(path)]}"
        for name, path in paths.items()
        if (loadable := audit.audit_file(path, allowlist=ALLOWLIST).loadable)
        != torch_says[str(path)]
    ]
    assert wrong == []
