"""safetensors files are audited as what they are (no pickle: ok when well-formed), and a
malformed or hostile one is unreadable with the reason, one line, never a traceback; where
the `safetensors` package is installed it is the oracle for every verdict."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_ckpt.audit.formats.safetensors import (
    DTYPE_BITS,
    MAX_HEADER_VALUES,
    TORCH_DTYPES,
    audit_safetensors,
    looks_like_safetensors,
)
from pytest_ckpt.cli import main
from tests.forked_runs import run_python


def safetensors_bytes(
    tensors: dict[str, tuple[str, list[int]]],
    metadata: dict[str, str] | None = None,
    *,
    pad: bool = True,
) -> bytes:
    """A well-formed file, written by hand as the format says: tensors laid end to end in
    the order given, each filled with a byte pattern; the header padded to 8 bytes."""
    header: dict[str, object] = {"__metadata__": metadata} if metadata is not None else {}
    data = b""
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * DTYPE_BITS[dtype] // 8
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [len(data), len(data) + size],
        }
        data += bytes(i % 251 for i in range(size))
    raw = json.dumps(header).encode()
    if pad:
        raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def with_header(raw: bytes, data: bytes = b"", length: int | None = None) -> bytes:
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


TENSOR = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
VALID = {
    "two-tensors-and-metadata": safetensors_bytes(
        {"w": ("F32", [2, 3]), "b": ("I64", [3])}, {"format": "pt"}
    ),
    "empty": safetensors_bytes({}),
    "unpadded": safetensors_bytes({"x": ("U8", [5])}, pad=False),
    "zero-size-tensors": safetensors_bytes({"e": ("F16", [0, 4]), "s": ("BF16", [])}),
    "sub-byte-f4": safetensors_bytes({"q": ("F4", [2, 4])}),
    "every-dtype": safetensors_bytes({d: (d, [8]) for d in sorted(TORCH_DTYPES)}),
    "empty-with-huge-leading-dims": with_header(
        b'{"w":{"dtype":"F32","shape":[4611686018427387904,3,0],"data_offsets":[0,0]}}'
    ),
    "largest-int64-dim": with_header(
        b'{"w":{"dtype":"F32","shape":[0,9223372036854775807],"data_offsets":[0,0]}}'
    ),
    "tiny-float-elsewhere": with_header(TENSOR[:-2] + b',"x":1e-400}}', b"\0" * 8),
    "unicode-name": safetensors_bytes({"gewicht-ä-重": ("F64", [1])}),
    "null-metadata": with_header(b'{"__metadata__":null}'),
    "unknown-tensor-field": with_header(
        b'{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":[1]}}', b"\0"
    ),
}
# name -> (file bytes, what the reason must say)
HOSTILE = {
    "too-short": (b"\x05\0\0", "too short"),
    "header-past-end": (with_header(TENSOR, b"\0" * 8, length=4096), "past the end"),
    "huge-header-length": (with_header(b"{}", length=1 << 62), "over the reader's"),
    "not-json": (with_header(b"{not json}"), "not JSON"),
    "truncated-json": (with_header(TENSOR[:-1], b"\0" * 8), "not JSON"),
    "nan": (with_header(b'{"__metadata__":{"a":NaN}}'), "not JSON"),
    "trailing-nul": (with_header(b"{}\0"), "not JSON"),
    "not-utf8": (with_header(b'{"\xff":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}'), "UTF-8"),
    "lone-surrogate": (
        with_header(b'{"\\ud800":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}'),
        "surrogate",
    ),
    "top-level-array": (with_header(b"[]"), "not an object"),
    "metadata-not-strings": (with_header(b'{"__metadata__":{"a":1}}'), "strings to strings"),
    "metadata-twice": (with_header(b'{"__metadata__":{},"__metadata__":{}}'), "duplicate"),
    "field-twice": (
        with_header(b'{"w":{"dtype":"F32","dtype":"I32","shape":[2],"data_offsets":[0,8]}}'),
        "duplicate",
    ),
    "bad-dtype": (with_header(TENSOR.replace(b"F32", b"f32"), b"\0" * 8), "unknown dtype"),
    "object-dtype": (with_header(TENSOR.replace(b'"F32"', b'"O"'), b"\0" * 8), "unknown dtype"),
    "missing-shape": (with_header(b'{"w":{"dtype":"U8","data_offsets":[0,1]}}', b"\0"), "shape"),
    "negative-dim": (with_header(TENSOR.replace(b"[2]", b"[-2]"), b"\0" * 8), "unsigned"),
    "float-dim": (with_header(TENSOR.replace(b"[2]", b"[2.0]"), b"\0" * 8), "unsigned"),
    "bool-dim": (with_header(TENSOR.replace(b"[2]", b"[true]"), b"\0" * 8), "unsigned"),
    "three-offsets": (with_header(TENSOR.replace(b"[0,8]", b"[0,8,8]"), b"\0" * 8), "[begin"),
    "offsets-past-data": (with_header(TENSOR.replace(b"[0,8]", b"[0,16]"), b"\0" * 8), "bytes"),
    "gap": (with_header(TENSOR.replace(b"[0,8]", b"[4,12]"), b"\0" * 12), "gap"),
    "reversed-offsets": (with_header(TENSOR.replace(b"[0,8]", b"[8,0]"), b"\0" * 8), "begin"),
    "overlap": (
        with_header(
            b'{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
            b'"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}',
            b"\0" * 6,
        ),
        "overlaps",
    ),
    "name-twice-other-span": (  # both keep the last entry, which leaves [0, 4) uncovered
        with_header(
            b'{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
            b'"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}',
            b"\0" * 8,
        ),
        "gap",
    ),
    "shape-size-mismatch": (with_header(TENSOR.replace(b"[2]", b"[3]"), b"\0" * 8), "12 bytes"),
    "sub-byte-not-whole": (
        with_header(b'{"q":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', b"\0\0"),
        "1.5 bytes",
    ),
    "overflowing-shape": (
        with_header(TENSOR.replace(b"[2]", b"[4294967296,4294967296]"), b"\0" * 8),
        "overflows",
    ),
    "data-not-covered": (with_header(TENSOR, b"\0" * 9), "cover 8 of the 9"),
    # issue 20: files the reader (serde_json into u64) or safetensors.torch refuses
    "number-out-of-range": (with_header(TENSOR[:-2] + b',"x":1e400}}', b"\0" * 8), "out of range"),
    "integer-out-of-range": (
        with_header(TENSOR[:-2] + b',"x":[1' + b"0" * 400 + b"]}}", b"\0" * 8),
        "out of range",
    ),
    "negative-zero-offset": (
        with_header(TENSOR.replace(b"[0,8]", b"[-0,8]"), b"\0" * 8),
        "unsigned",
    ),
    "negative-zero-elsewhere-is-a-float": (
        with_header(TENSOR.replace(b"[2]", b"[2,-0]"), b"\0" * 8),
        "unsigned",
    ),
    "f6-dtype": (
        with_header(b'{"w":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[0,3]}}', b"\0" * 3),
        "no torch dtype",
    ),
    "dim-past-int64": (
        with_header(TENSOR.replace(b"[2]", b"[0,18446744073709551615]").replace(b"8]", b"0]")),
        "int64",
    ),
    "stride-overflow": (
        with_header(TENSOR.replace(b"[2]", b"[0,4611686018427387904,3]").replace(b"8]", b"0]")),
        "stride",
    ),
    "element-count-overflow": (
        with_header(TENSOR.replace(b"[2]", b"[4611686018427387904,4,0]").replace(b"8]", b"0]")),
        "overflows",
    ),
    "f4-odd-last-dim": (
        with_header(b'{"q":{"dtype":"F4","shape":[2,3],"data_offsets":[0,3]}}', b"\0" * 3),
        "last dim",
    ),
    "deep-nesting": (
        with_header(
            b'{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":'
            + b"[" * 200
            + b"]" * 200
            + b"}}",
            b"\0",
        ),
        "deeper than 128",
    ),
}
DUPLICATE_NAMES = with_header(
    b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
    b'"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
    b"\0",
)


def write(folder: Path, cases: dict[str, bytes]) -> dict[str, Path]:
    paths = {}
    for name, data in cases.items():
        paths[name] = folder / f"{name}.safetensors"
        paths[name].write_bytes(data)
    return paths


def audit_in_process(capsys, *paths: Path) -> tuple[int, str, str]:
    """`pytest-ckpt audit PATHS` in this process (the subprocess test is the one below)."""
    status = main(["audit", *map(str, paths)])
    out, err = capsys.readouterr()
    return status, out, err


def run_cli(*args: object) -> subprocess.CompletedProcess[str]:
    return run_python(
        [sys.executable, "-m", "pytest_ckpt.cli", "audit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_well_formed_files_are_ok_and_say_no_pickle_runs(tmp_path, capsys) -> None:
    paths = write(tmp_path, VALID)
    for name, path in paths.items():
        report = audit_safetensors(path)
        assert report.error is None and report.findings == (), name
    status, out, err = audit_in_process(capsys, *paths.values())
    assert status == 0, out + err
    lines = [line for line in out.splitlines() if not line.startswith("  note:")]
    assert len(lines) == len(VALID)
    assert "  note: 1 tensor field(s) the safetensors reader ignores" in out
    assert all(": ok (safetensors, " in line and "nothing in it runs" in line for line in lines)
    assert "2 tensors, 48 data bytes, 1 metadata entries" in lines[0]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_malformed_file_is_unreadable_with_the_reason(tmp_path, name) -> None:
    data, reason = HOSTILE[name]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    report = audit_safetensors(path)
    assert report.error is not None, name
    assert reason in report.error
    assert "\n" not in report.error


def test_cli_gives_exit_2_and_one_line_per_malformed_file_never_a_traceback(tmp_path) -> None:
    paths = write(tmp_path, {name: data for name, (data, _) in HOSTILE.items()})
    result = run_cli(*paths.values())
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == len(HOSTILE)
    assert "pickle" not in result.stdout  # not mistaken for a torch.save file


def test_a_tensor_name_given_twice_is_a_finding(tmp_path, capsys) -> None:
    (path,) = write(tmp_path, {"dup": DUPLICATE_NAMES}).values()
    status, out, _ = audit_in_process(capsys, path)
    assert status == 1
    assert "header['a']: the header gives 'a' more than once" in out


def test_control_characters_in_names_are_escaped_in_every_output(tmp_path, capsys) -> None:
    name = "evil\n\x1b[31mfake: ok\u202e"
    header = {name: {"dtype": "U8", "shape": [1], "data_offsets": [0, 2]}}
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(with_header(json.dumps(header).encode(), b"\0\0"))
    dup = tmp_path / "dup.safetensors"
    entry = json.dumps({"dtype": "U8", "shape": [1], "data_offsets": [0, 1]})
    key = json.dumps(name)
    dup.write_bytes(with_header(f"{{{key}:{entry},{key}:{entry}}}".encode(), b"\0"))
    status, out, err = audit_in_process(capsys, bad, dup)
    assert status == 2
    for text in (out, err):
        assert "\x1b" not in text and "\u202e" not in text
        assert "fake: ok" not in text.replace("'evil\\n\\x1b[31mfake: ok\\u202e'", "")
    assert "'evil\\n\\x1b[31mfake: ok\\u202e'" in out
    assert len(out.splitlines()) == 3  # the unreadable line, the finding's two


def test_a_header_too_big_to_check_in_bounded_memory_is_refused(tmp_path) -> None:
    values = b",".join([b"0"] * MAX_HEADER_VALUES)
    path = tmp_path / "many.safetensors"
    path.write_bytes(with_header(b'{"__metadata__":null,"x":[' + values + b"]}"))
    report = audit_safetensors(path)
    assert report.error is not None and "auditor limit" in report.error


def test_sniffing_knows_a_safetensors_header_from_a_pickle() -> None:
    assert looks_like_safetensors(VALID["two-tensors-and-metadata"][:16])
    assert not looks_like_safetensors(b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01")
    assert not looks_like_safetensors(with_header(b"{}", length=1 << 40)[:16])


def _mutations(data: bytes) -> list[bytes]:
    """Every truncation, and each header byte replaced by a few telling values."""
    (length,) = struct.unpack_from("<Q", data)
    cases = [data[:end] for end in range(len(data))]
    for pos in range(length + 8):
        for value in b'0 }"\xff9':
            cases.append(data[:pos] + bytes([value]) + data[pos + 1 :])
    return cases


LOAD_FILE_VERDICTS = """
import json, sys
from safetensors.torch import load_file
verdicts = {}
for path in sys.argv[1:]:
    try:
        load_file(path)
        verdicts[path] = True
    except Exception:  # the verdict is all we want
        verdicts[path] = False
print(json.dumps(verdicts))
"""


def test_verdicts_agree_with_safetensors_torch_load_file(tmp_path) -> None:
    """`safetensors.torch.load_file` (what a user calls) is the oracle, in a fresh process.
    The package is not a dependency (the audit never needs it): skipped where absent."""
    pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    written = tmp_path / "written.safetensors"
    save_file({"w": torch.ones(2, 3), "n": torch.arange(4)}, str(written), {"k": "v"})
    base = safetensors_bytes({"ab": ("F32", [2]), "cd": ("I8", [3])}, {"m": "x"})
    cases = {"written": written.read_bytes(), "dup": DUPLICATE_NAMES}
    cases |= {f"valid-{k}": v for k, v in VALID.items()}
    cases |= {f"hostile-{k}": v for k, (v, _) in HOSTILE.items()}
    cases |= {f"mutation-{i}": v for i, v in enumerate(_mutations(base))}
    paths = write(tmp_path, cases)
    result = subprocess.run(
        [sys.executable, "-c", LOAD_FILE_VERDICTS, *map(str, paths.values())],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    oracle = json.loads(result.stdout)
    disagreements = [
        (name, oracle[str(path)], audit_safetensors(path).error)
        for name, path in paths.items()
        if (audit_safetensors(path).error is None) != oracle[str(path)]
    ]
    assert disagreements == []
    assert len(cases) > 500
