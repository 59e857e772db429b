"""Inputs migrate must survive: a file name that is not UTF-8, an adapter that trips over the
converted data, tensor records torch itself rejects. One line and an exit status, or a correct
migration, never a traceback; torch (in a subprocess) says what a tensor record is."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from pytest_ckpt.migrate.workflow import REFERENCE_V0, Adapter, MigrationFailed, migrate_file
from tests.audit.conftest import torch_verdicts
from tests.audit.test_hostile import write_zip
from tests.audit.test_torch_checks import LOADED_BY_TORCH, REFUSED_BY_TORCH, in_dict, tensor
from tests.forked_runs import run_python


def run_cli(*args: str | bytes) -> subprocess.CompletedProcess:
    return run_python(
        [sys.executable, "-m", "pytest_ckpt.cli", "migrate", *args],
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_a_file_name_that_is_not_utf8_migrates(tmp_path) -> None:
    """Linux file names are bytes: `\\xff.pt` reaches Python as a surrogate escape, which
    torch's archive reader cannot take as a name (it gets the open file, as torch.load does)."""
    folder = os.fsencode(tmp_path)
    source, out = folder + b"/\xff.pt", folder + b"/\xfe-out.pt"
    state = {"w": torch.arange(4.0), "tags": {"a"}}
    with open(source, "wb") as handle:
        torch.save(state, handle)
    result = run_cli(source, out)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"Traceback" not in result.stderr
    with open(out, "rb") as handle:
        migrated = torch.load(handle, weights_only=True)
    assert torch.equal(migrated["w"], state["w"]) and migrated["tags"] == ["a"]


def test_an_int_state_dict_key_under_reference_v0_is_refused_in_one_line(tmp_path) -> None:
    source, out = tmp_path / "v0.pt", tmp_path / "out.pt"
    torch.save({"schema_version": 0, "config": {}, "state_dict": {1: torch.zeros(2)}}, source)
    result = run_cli(str(source), str(out), "--reference-v0")
    err = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in err, err
    assert len(err.splitlines()) == 1
    assert "not a schema-0 reference checkpoint (state_dict key 1 is not a str)" in err
    assert not out.exists()


def attribute_error(state: dict) -> dict:
    return state["w"].no_such_attribute


def test_any_exception_from_an_adapter_refuses_the_file_naming_it(tmp_path) -> None:
    """An adapter is the user's code, run on data from the file: whatever it raises is a
    refusal of that file (exit 1), with the exception's type, not a traceback."""
    source, out = tmp_path / "plain.pt", tmp_path / "out.pt"
    torch.save({"w": torch.zeros(1)}, source)
    adapter = Adapter(attribute_error, "never", "refused by attribute_error")
    with pytest.raises(MigrationFailed) as failed:
        migrate_file(source, out, adapt=adapter)
    message = str(failed.value)
    assert failed.value.status == 1 and "refused by attribute_error (AttributeError: " in message
    assert not out.exists()
    assert REFERENCE_V0.endswith(":adapt_v0")


TORCH_REJECTS = {
    name: REFUSED_BY_TORCH[name]
    for name in (
        "size_past_storage",
        "offset_past_storage",
        "stride_past_storage",
        "record_bigger_than_numel",
    )
}
TORCH_LOADS = {
    "clean_tensor": LOADED_BY_TORCH["clean_tensor"],
    "empty_view_past_the_end": LOADED_BY_TORCH["empty_view_past_the_end"],
    "view_inside_its_storage": in_dict(tensor(offset=1, size=b"K\x01\x85")),
}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    folder = tmp_path_factory.mktemp("records")
    cases = {**TORCH_REJECTS, **TORCH_LOADS}
    paths = {name: write_zip(folder / f"{name}.pt", data) for name, data in cases.items()}
    return paths, torch_verdicts(list(paths.values()))


@pytest.mark.parametrize("name", sorted(TORCH_REJECTS))
def test_a_tensor_record_torch_rejects_is_unreadable_and_nothing_is_written(
    records, name, tmp_path
) -> None:
    """A view past its storage read uninitialised memory into OUT (exit 0) before: the
    storage now comes from torch's own reader, fixed in size, as torch.load's does."""
    paths, verdicts = records
    assert verdicts[str(paths[name])] is False
    out = tmp_path / "out.pt"
    with pytest.raises(MigrationFailed) as failed:
        migrate_file(paths[name], out)
    assert failed.value.status == 2 and not out.exists()


@pytest.mark.parametrize("name", sorted(TORCH_LOADS))
def test_a_tensor_record_torch_loads_migrates_to_the_same_tensor(records, name, tmp_path) -> None:
    paths, verdicts = records
    assert verdicts[str(paths[name])] is True
    out = tmp_path / "out.pt"
    migrate_file(paths[name], out)
    expected = torch.load(paths[name], weights_only=True)["w"]
    migrated = torch.load(out, weights_only=True)["w"]
    assert torch.equal(migrated, expected) and migrated.stride() == expected.stride()


def test_a_storage_on_meta_is_refused_it_holds_no_data(tmp_path) -> None:
    """torch.load gives a meta tensor (no values, and no bounds checked); migrate would write
    the record's bytes, or memory past them, as values: refused instead."""
    path = write_zip(tmp_path / "meta.pt", LOADED_BY_TORCH["meta_storage_is_not_bounds_checked"])
    with pytest.raises(MigrationFailed) as failed:
        migrate_file(path, tmp_path / "out.pt")
    assert failed.value.status == 1
    assert "root['w']: storage '0' is on meta" in failed.value.details[0]
    assert not (tmp_path / "out.pt").exists()
