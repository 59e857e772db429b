"""`migrate_file` is the migration workflow as a library function: it returns what it wrote
or raises `MigrationFailed` (the CLI's exit status and the refused paths) having written
nothing; an adapter (`--adapt MODULE:FUNC`, `--reference-v0` being the reference's) brings
the converted checkpoint to the project's format."""

from __future__ import annotations

import struct

import pytest
import torch

from pytest_ckpt.cli import build_parser, main
from pytest_ckpt.migrate.workflow import (
    REFERENCE_V0,
    Adapter,
    Migration,
    MigrationFailed,
    migrate_file,
)
from tests.audit.test_hostile import PROTO2, global_op, write_zip
from tests.support.legacy_objects import legacy_state

NOT_A_FUNCTION = 3


def to_schema_2(state: dict) -> dict:
    """A project's own adapter: the migrated legacy state under a schema version."""
    return {"schema_version": 2, "seed_stage": state["seed_state"]["stage"]}


@pytest.fixture
def legacy(tmp_path):
    source = tmp_path / "legacy.pt"
    torch.save(legacy_state(), source)
    return source


def test_migrate_file_returns_what_it_wrote_and_each_conversion(legacy, tmp_path) -> None:
    out = tmp_path / "out.pt"
    done = migrate_file(legacy, out)
    assert isinstance(done, Migration) and done.target == out
    assert (
        "root['seed_state'].stage: tests.support.legacy_objects.LegacyStage member -> its "
        "value 3" in done.conversions
    )
    assert torch.load(out, weights_only=True)["seed_state"]["stage"] == 3


def test_a_refused_file_raises_with_its_status_and_paths_and_writes_nothing(tmp_path) -> None:
    payload = PROTO2 + b"}X\x01\x00\x00\x00x" + global_op("os", "system")
    payload += b"X" + struct.pack("<I", 4) + b"true" + b"\x85Rs."  # {'x': os.system('true')}
    source, out = write_zip(tmp_path / "evil.pt", payload), tmp_path / "out.pt"
    with pytest.raises(MigrationFailed) as failed:
        migrate_file(source, out)
    assert (
        failed.value.status == 1 and str(failed.value) == f"{source}: refused; {out} not written:"
    )
    assert failed.value.details[0].startswith("root['x']: os.system is called when unpickling")
    assert not out.exists()


def test_an_adapter_named_module_function_brings_the_result_to_the_projects_format(
    legacy, tmp_path
) -> None:
    spec = f"{__name__}:to_schema_2"
    done = migrate_file(legacy, tmp_path / "by-name.pt", adapt=spec)
    assert done.conversions[-1] == f"root: adapted by {spec}"
    assert torch.load(tmp_path / "by-name.pt", weights_only=True) == {
        "schema_version": 2,
        "seed_stage": 3,
    }
    adapter = Adapter(to_schema_2, "legacy -> schema 2", "not a legacy checkpoint")
    assert migrate_file(legacy, tmp_path / "in-hand.pt", adapt=adapter).conversions[-1] == (
        "root: legacy -> schema 2"
    )


def test_an_adapter_that_refuses_the_input_leaves_out_unwritten(tmp_path) -> None:
    source, out = tmp_path / "plain.pt", tmp_path / "out.pt"
    torch.save({"w": torch.zeros(1)}, source)  # no seed_state: the adapter's KeyError
    with pytest.raises(MigrationFailed) as failed:
        migrate_file(source, out, adapt=f"{__name__}:to_schema_2")
    assert failed.value.status == 1 and f"refused by {__name__}:to_schema_2" in str(failed.value)
    assert not out.exists()


@pytest.mark.parametrize(
    ("spec", "says"),
    [("nowhere_pkg_x:adapt", "cannot import it"), (f"{__name__}:NOT_A_FUNCTION", "not a function")],
)
def test_an_adapter_that_is_not_a_function_is_a_usage_error(legacy, tmp_path, capsys, spec, says):
    out = tmp_path / "out.pt"
    assert main(["migrate", str(legacy), str(out), "--adapt", spec]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"--adapt {spec}: {says}" in err
    assert not out.exists()


def test_reference_v0_is_adapt_with_the_reference_systems_adapter(capsys) -> None:
    args = build_parser().parse_args(["migrate", "in.pt", "out.pt", "--reference-v0"])
    assert args.adapt == REFERENCE_V0 == "pytest_ckpt.reference.schema_v0:adapt_v0"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["migrate", "a", "b", "--reference-v0", "--adapt", "m:f"])
    assert "not allowed with argument" in capsys.readouterr().err
