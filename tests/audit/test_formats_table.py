"""The formats table (`audit.formats.table`) is the one place that says which format a path
is: its order decides what the bytes and the name say, a walk skips what no format claims,
and a plain file never reaches the DCP audit."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from pytest_ckpt.audit.allowlist import load_allowlist
from pytest_ckpt.audit.formats import dcp_format, table
from pytest_ckpt.audit.formats.dcp import folder as dcp_folder
from pytest_ckpt.audit.formats.walk import audit_target
from tests.audit.test_safetensors import safetensors_bytes
from tests.audit.test_sb3_zip import sb3_zip


def _torch_bytes(value: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _plain_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images/0.png", b"not a checkpoint")
    return path


SAFETENSORS = safetensors_bytes({"w": ("F32", [2])})
PICKLE = pickle.dumps({"step": 3}, protocol=4)


CASES = [
    ("weights.pt", SAFETENSORS, False, "safetensors"),  # bytes before names
    ("weights.safetensors", PICKLE, False, "torch file"),  # a pickle is what torch runs
    ("weights.safetensors", b"garbage, not a header", False, "safetensors"),  # a broken one
    ("state.pkl", PICKLE, False, "torch file"),
    ("state.data", PICKLE, False, "torch file"),  # a pickle head, whatever the name
    ("model.pt", b"zip: torch", False, "torch file"),
    ("trainer_state.json", b"{}", False, "JSON"),
    ("tokenizer.bin", b"\x00\x01 raw numpy.tofile bytes", False, "not-a-checkpoint .bin"),
    ("README.md", b"# notes", False, None),  # a walk lists it as skipped
    ("README.md", b"# notes", True, "torch file"),  # named: torch's audit says what it is
    ("dataset.zip", b"zip: plain", False, None),  # a zip of something else
    ("__0_0.distcp", b"\x00" * 32, False, "DCP member"),
    ("__0.metadata", PICKLE, False, "DCP member"),
    ("__0.metadata", b"not a pickle", False, None),  # by name only once a row claims it
    ("__0.metadata", b"not a pickle", True, "DCP member"),
]


@pytest.mark.parametrize(
    ("name", "content", "given", "expected"),
    CASES,
    ids=[
        f"{name}-{'given' if given else 'walked'}-{expected}" for name, _, given, expected in CASES
    ],
)
def test_the_table_order_decides_each_files_format(
    tmp_path, name: str, content: bytes, given: bool, expected: str | None
) -> None:
    path = tmp_path / name
    if content == b"zip: torch":
        path.write_bytes(_torch_bytes({"w": torch.zeros(2)}))
    elif content == b"zip: plain":
        _plain_zip(path)
    else:
        path.write_bytes(content)
    found = table.choose(table.probe_file(str(path), given=given))
    assert (found.name if found is not None else None) == expected


def test_an_sb3_zip_is_chosen_before_the_torch_file(tmp_path) -> None:
    path = sb3_zip(tmp_path / "ppo.zip", {"gamma": 0.99}, {"policy.pth": {"w": torch.ones(2)}})
    assert table.choose(table.probe_file(str(path), given=False)) is table.SB3_ZIP
    renamed = sb3_zip(tmp_path / "ppo.pt", {"gamma": 0.99}, {"policy.pth": {}})
    assert table.choose(table.probe_file(str(renamed), given=True)) is table.SB3_ZIP


def test_only_a_folder_with_metadata_is_a_dcp_folder(tmp_path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "dcp").mkdir()
    (tmp_path / "dcp" / ".metadata").write_bytes(PICKLE)
    assert table.choose(table.probe_folder(str(tmp_path / "plain"), given=True)) is None
    found = table.choose(table.probe_folder(str(tmp_path / "dcp"), given=True))
    assert found is dcp_format.DCP_FOLDER


def test_a_plain_file_never_passes_through_the_dcp_check(tmp_path, monkeypatch) -> None:
    """Neither named on the command line nor met in a walk: only a DCP member's name, or a
    folder (asked whether it holds `.metadata`), may reach `audit.formats.dcp.folder`."""
    reached: list[str] = []
    is_dcp_folder = dcp_folder.is_dcp_folder

    def folders_only(path) -> bool:
        if not Path(path).is_dir():
            reached.append(f"is_dcp_folder({path})")
        return is_dcp_folder(path)

    def refuse(name: str):
        def check(path, *args, **kwargs):
            reached.append(f"{name}({path})")
            raise AssertionError(f"{name} reached for {path}")

        return check

    monkeypatch.setattr(dcp_folder, "is_dcp_folder", folders_only)
    for name in ("dcp_folder_of", "audit_dcp_target", "audit_dcp_folder"):
        monkeypatch.setattr(dcp_folder, name, refuse(name))
    files = tmp_path / "run"
    files.mkdir()
    (files / "model.pt").write_bytes(_torch_bytes({"w": torch.zeros(2)}))
    (files / "state.pkl").write_bytes(PICKLE)
    (files / "model.safetensors").write_bytes(SAFETENSORS)
    (files / "trainer_state.json").write_text("{}")
    (files / "notes.txt").write_text("hello")
    allowlist = load_allowlist()
    given = [audit_target(str(path), allowlist).reports[0] for path in sorted(files.iterdir())]
    walked = audit_target(str(files), allowlist).reports
    assert [r.format for r in given] == ["zip", "safetensors", None, "raw-pickle", "json"]
    assert [r.format for r in walked] == ["zip", "safetensors", "skipped", "raw-pickle", "json"]
    assert reached == []
