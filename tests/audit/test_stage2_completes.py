"""Stage 2 runs to the end: torch's unpickler over meta storages meets operators with no meta
kernel (quantized and nested tensors). Each object after such a tensor is still checked,
and a pass that could not finish never says ok (issue 20).

Every case is a real `torch.save` with its data.pkl edited, judged against
`torch.load(weights_only=True)` in a fresh process (with and without map_location="cpu")."""

from __future__ import annotations

import io
import re
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from pytest_ckpt.audit import audit_file
from tests.audit.conftest import torch_verdicts
from tests.audit.test_torch_checks import call, uni
from tests.forked_runs import run_python

PLACEHOLDER = "PLACEHOLDER"


def nested() -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the nested tensor API is a prototype
        return torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)])


def quantized() -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized dtypes are deprecated
        return torch.quantize_per_tensor(torch.zeros(4), 0.1, 0, torch.qint8)


def per_channel() -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scales, points = torch.tensor([0.1, 0.2]), torch.tensor([0, 1])
        return torch.quantize_per_channel(torch.zeros(2, 3), scales, points, 0, torch.qint8)


def saved(path: Path, state: object, *edits: tuple[bytes, bytes]) -> Path:
    """torch.save(state) at `path`, each (pattern, replacement) edit (a bytes regex)
    applied once to its data.pkl."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.endswith("/data.pkl"):
                for pattern, new in edits:
                    body, count = re.subn(pattern, lambda _, new=new: new, body, count=1)
                    assert count == 1, (pattern, body)
            dst.writestr(info.filename, body)
    return path


def refused_files(folder: Path) -> dict[str, Path]:
    """The five files of issue 20 that stage 2 stopped before judging, and variants: torch
    refuses each (the GPU ones only without map_location)."""
    q, n = quantized(), nested()
    after = torch.zeros(7)
    complex_zz = call("builtins.complex", uni("zz"))
    # the storage of `after` (the one of numel 7) saved on cuda:0: its location, a memo GET
    # of 'cpu' in torch's pickle, becomes the string 'cuda:0'
    on_gpu = (rb"h.K\x07t", uni("cuda:0") + b"K\x07t")
    cases = {
        "gpu_nested_then_tensor": saved(folder / "gpu_nested.pt", {"a": n, "b": after}, on_gpu),
        "gpu_quantized_then_tensor": saved(
            folder / "gpu_quantized.pt", {"a": q, "b": after}, on_gpu
        ),
        "quantized_then_complex_zz": saved(
            folder / "q_complex.pt",
            {"a": q, "b": PLACEHOLDER},
            (re.escape(uni(PLACEHOLDER)), complex_zz),
        ),
        "quantized_past_its_storage": saved(
            folder / "q_past.pt", {"a": q}, (rb"K\x04\x85", b"K\x05\x85")
        ),
        "nested_then_view_past_storage": saved(
            folder / "nested_past.pt", {"a": n, "b": after}, (rb"K\x07\x85", b"K\x08\x85")
        ),
        "per_channel_then_complex_zz": saved(
            folder / "pc_complex.pt",
            {"a": per_channel(), "b": PLACEHOLDER},
            (re.escape(uni(PLACEHOLDER)), complex_zz),
        ),
        "quantized_requires_grad": saved(
            folder / "q_grad.pt",
            {"a": q},
            (rb"\x89ccollections\nOrderedDict", b"\x88ccollections\nOrderedDict"),
        ),
    }
    return cases


def loaded_files(folder: Path) -> dict[str, Path]:
    """Quantized tensors torch loads, with objects after them that torch checks."""
    shared = quantized()
    states = {
        "quantized": {"a": quantized(), "b": torch.zeros(7)},
        "per_channel": {"a": per_channel(), "b": [1, complex(1, 2)]},
        "quantized_shared": {"a": shared, "b": shared, "c": torch.Size([2])},
    }
    return {name: saved(folder / f"{name}.pt", state) for name, state in states.items()}


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """Each file, with torch's verdict (no map_location, and "cpu") from a fresh process."""
    folder = tmp_path_factory.mktemp("stage2")
    refused, loaded = refused_files(folder), loaded_files(folder)
    paths = [*refused.values(), *loaded.values()]
    return refused, loaded, torch_verdicts(paths), torch_verdicts(paths, "cpu")


@pytest.mark.parametrize("name", ["gpu_nested_then_tensor", "gpu_quantized_then_tensor",
                                  "quantized_then_complex_zz", "quantized_past_its_storage",
                                  "nested_then_view_past_storage", "per_channel_then_complex_zz",
                                  "quantized_requires_grad"])  # fmt: skip
def test_what_torch_refuses_after_a_tensor_with_no_meta_kernel_is_refused(judged, name) -> None:
    refused, _loaded, verdicts, _on_cpu = judged
    path = refused[name]
    assert verdicts[str(path)] is False, "torch must refuse the case"
    report = audit_file(path)
    assert [finding.kind for finding in report.findings] == ["torch-refuses"], report


def test_the_map_location_verdicts_are_torchs(judged) -> None:
    """With map_location="cpu" the GPU-saved quantized file loads, and the audit says so;
    the nested one is not ok (see test_a_nested_tensor_is_never_ok)."""
    refused, loaded, _verdicts, on_cpu = judged
    for path in [*refused.values(), *loaded.values()]:
        report = audit_file(path, map_location="cpu")
        if "nested" not in path.name:
            assert report.loadable == on_cpu[str(path)], (path.name, report)
    assert on_cpu[str(refused["gpu_quantized_then_tensor"])] is True


@pytest.mark.parametrize("name", ["quantized", "per_channel", "quantized_shared"])
def test_quantized_tensors_torch_loads_are_ok_and_fully_checked(judged, name) -> None:
    _refused, loaded, verdicts, _on_cpu = judged
    assert verdicts[str(loaded[name])] is True
    report = audit_file(loaded[name])
    assert report.loadable and report.notes == (), report


def test_a_nested_tensor_is_never_ok(tmp_path) -> None:
    """torch checks a nested tensor against sizes held in tensor bytes, which the auditor
    does not read: the rest of the file is checked, and the verdict is `cannot verify`."""
    path = saved(tmp_path / "nested.pt", {"a": nested(), "b": torch.zeros(7)})
    assert torch_verdicts([path]) == {str(path): True}
    report = audit_file(path)
    assert [finding.kind for finding in report.findings] == ["cannot-verify"], report
    assert report.findings[0].detail.startswith("cannot verify: a nested tensor")


def wrapped(path: Path, before: bytes, after: bytes) -> Path:
    """A saved {"a": quantized tensor} whose tensor is the first argument of a call: the
    call's GLOBAL and MARK go `before` the rebuild, the other arguments `after` it."""
    return saved(
        path,
        {"a": quantized()},
        (rb"ctorch._utils\n_rebuild_qtensor", before + b"ctorch._utils\n_rebuild_qtensor"),
        (rb"R(q.)?s\.$", b"R" + after + b"tRs."),
    )


def test_a_stand_in_used_again_is_never_ok(tmp_path) -> None:
    """A quantized tensor handed to an operator after its rebuild: what torch does with the
    real tensor there is not known, so the pass stops and says so."""
    to_float = wrapped(
        tmp_path / "to_float.pt",
        b"ctorch._utils\n_rebuild_device_tensor_from_cpu_tensor\n(",
        b"ctorch\nfloat32\n" + uni("cpu") + b"\x89",
    )
    report = audit_file(to_float)
    assert [finding.kind for finding in report.findings] == ["cannot-verify"], report
    assert "stood in for" in report.findings[0].detail


def test_a_quantized_parameter_is_torchs_verdict(tmp_path) -> None:
    """Parameter(qtensor) calls no operator on it: the stand-in answers as torch does."""
    hooks = b"ccollections\nOrderedDict\n)R"
    path = wrapped(
        tmp_path / "q_param.pt", b"ctorch._utils\n_rebuild_parameter\n(", b"\x89" + hooks
    )
    assert audit_file(path).loadable == torch_verdicts([path])[str(path)]


def test_the_cli_exits_1_when_it_cannot_verify(tmp_path) -> None:
    path = saved(tmp_path / "nested.pt", {"a": nested()})
    result = run_python(
        [sys.executable, "-m", "pytest_ckpt.cli", "audit", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result
    assert "cannot verify: a nested tensor" in result.stdout


def quantized_scalar() -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.quantize_per_tensor(torch.tensor(0.0), 0.1, 0, torch.qint8)


def test_a_stand_in_has_the_quantized_tensors_shape(tmp_path) -> None:
    """`torch.Tensor((qtensor, 1.5))` takes the 0-dim quantized tensor as a number, a check
    made on its shape before any operator: a stand-in of another shape made the audit refuse
    a file torch loads (the nightly differential on torch 2.15 found it); with its shape, the
    number is an operator on the stand-in, which the audit cannot verify."""
    path = saved(
        tmp_path / "q_in_tensor.pt",
        {"a": quantized_scalar()},
        (rb"ctorch._utils\n_rebuild_qtensor", b"ctorch\nTensor\n((ctorch._utils\n_rebuild_qtensor"),
        (rb"R(q.)?s\.$", b"RG?\xf8\x00\x00\x00\x00\x00\x00ttRs."),
    )
    assert torch_verdicts([path]) == {str(path): True}
    report = audit_file(path)
    assert [finding.kind for finding in report.findings] == ["cannot-verify"], report
