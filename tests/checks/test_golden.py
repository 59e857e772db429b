"""Every committed golden checkpoint of every supported schema version still loads with
weights_only=True, upgrades through the chain, and matches its recorded expectation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pytest_ckpt.audit import audit_file
from pytest_ckpt.checks.compare import diff_values
from pytest_ckpt.checks.golden import load_fixture_dir
from pytest_ckpt.errors import CheckpointError
from pytest_ckpt.migrate import (
    CURRENT_SCHEMA_VERSION,
    OLDEST_LOADABLE_VERSION,
    upgrade,
)
from pytest_ckpt.migrate.static import convert_file
from pytest_ckpt.migrate.trusted import to_primitives
from pytest_ckpt.plugin.snapshot_text import tensor_digest
from pytest_ckpt.reference import MorphogeneticModel
from pytest_ckpt.reference.schema_v0 import adapt_v0
from pytest_ckpt.reference.tasks import sample_input
from pytest_ckpt.reference.trainer import Trainer

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
VERSIONS = sorted(p for p in FIXTURES.glob("v[0-9]*") if (p / "manifest.json").exists())
ENTRIES = [
    (folder, entry)
    for folder in VERSIONS
    if int(folder.name[1:]) >= OLDEST_LOADABLE_VERSION
    for entry in json.loads((folder / "manifest.json").read_text())["files"]
]
LEGACY = json.loads((FIXTURES / "v0" / "manifest.json").read_text())["files"]


def test_every_schema_version_up_to_the_current_one_has_fixtures() -> None:
    assert [int(p.name[1:]) for p in VERSIONS] == list(range(0, CURRENT_SCHEMA_VERSION + 1))


@pytest.mark.parametrize(
    ("folder", "entry"), ENTRIES, ids=lambda v: getattr(v, "name", None) or v["file"]
)
def test_golden_checkpoint_loads_upgrades_and_matches(folder: Path, entry: dict) -> None:
    torch.set_num_threads(1)
    path = folder / entry["file"]
    assert audit_file(path).loadable
    with torch.serialization.safe_globals([]):
        state = upgrade(torch.load(path, weights_only=True))
    expect = entry["expect"]
    if entry["kind"] == "model":
        model = MorphogeneticModel.from_checkpoint(state)
        assert model.config() == expect["config"]
        assert {s: st.name for s, st in model.stages().items()} == expect["stages"]
        digests = {k: tensor_digest(v) for k, v in model.state_dict().items() if torch.is_tensor(v)}
        assert digests == expect["tensor_sha256"]
        model.eval()
        with torch.no_grad():
            out = model(sample_input(model.host))
        assert list(out.shape) == expect["forward_shape"]
        # Weights are compared bit for bit above; the forward pass is arithmetic, whose
        # last bits can differ between CPUs and torch builds, hence a tolerance here only.
        assert float(out.double().sum()) == pytest.approx(expect["forward_sum"], abs=1e-3)
    else:
        trainer = Trainer.from_state_dict(state)
        assert trainer.update == expect["update"]
        digests = {k: tensor_digest(v) for k, v in trainer.policy.state_dict().items()}
        assert digests == expect["policy_sha256"]
        assert {s: st.name for s, st in trainer.env.model.stages().items()} == expect[
            "model_stages"
        ]
        trainer.run_update()  # and it resumes


def test_a_newer_schema_version_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="schema_version 99 is newer than this pytest-ckpt knows"):
        upgrade({"schema_version": 99})
    with pytest.raises(ValueError, match="must be migrated, not upgraded"):
        upgrade({"schema_version": 0})
    with pytest.raises(ValueError, match="no schema_version"):
        upgrade({"weights": 1})


def test_fixture_dir_check_names_the_broken_file(tmp_path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(1)}, good)
    assert set(load_fixture_dir(tmp_path)) == {"good.pt"}
    (tmp_path / "manifest.json").write_text(
        json.dumps({"files": [{"file": "good.pt", "sha256": "0" * 64}]})
    )
    with pytest.raises(CheckpointError, match=r"good.pt: sha256 differs from .*manifest.json"):
        load_fixture_dir(tmp_path)
    (tmp_path / "manifest.json").unlink()
    torch.save({"when": __import__("datetime").date(2026, 1, 1)}, tmp_path / "bad.pt")
    with pytest.raises(
        CheckpointError, match=r"bad.pt: not loadable .*root\['when'\].*datetime.date"
    ):
        load_fixture_dir(tmp_path)


def test_users_run_the_same_check_with_the_fixture(pytester) -> None:
    folder = pytester.mkdir("golden")
    torch.save({"w": torch.zeros(2)}, folder / "a.pt")
    pytester.makepyfile(
        "def test_golden(ckpt_backcompat):\n"
        "    loaded = ckpt_backcompat('golden', rebuild=lambda s: s['w'].sum())\n"
        "    assert list(loaded) == ['a.pt']\n"
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


@pytest.mark.parametrize("entry", LEGACY, ids=lambda e: e["file"])
def test_legacy_v0_migrates_statically_to_its_v1_twin(entry: dict) -> None:
    path = FIXTURES / "v0" / entry["file"]
    # The point of the legacy set: weights_only refuses it (a DORMANT model has no seed, so
    # nothing of the legacy kind to refuse).
    assert audit_file(path).loadable == entry["file"].endswith("-dormant.pt")
    converted = convert_file(path)
    adapted = upgrade(adapt_v0(converted.result))
    expected = torch.load(FIXTURES / entry["migrates_to"], weights_only=True)
    assert diff_values(expected, adapted) == []
    MorphogeneticModel.from_checkpoint(adapted)  # and it rebuilds


@pytest.mark.parametrize("entry", LEGACY, ids=lambda e: e["file"])
def test_static_migration_equals_trust_on_every_legacy_fixture(entry: dict) -> None:
    path = FIXTURES / "v0" / entry["file"]
    trusted = to_primitives(torch.load(path, weights_only=False), "root", [])  # our own file
    assert diff_values(trusted, convert_file(path).result) == []


def test_a_golden_file_that_stops_matching_says_what_changed_since_git_head(pytester) -> None:
    """ckpt_backcompat diffs the file against its committed version (pytest_ckpt.diff)."""
    import hashlib
    import subprocess

    folder = pytester.mkdir("golden")
    torch.save({"model": {"w": torch.zeros(4)}, "step": 3}, folder / "a.pt")
    digest = hashlib.sha256((folder / "a.pt").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(
        json.dumps({"files": [{"file": "a.pt", "sha256": digest}]})
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(pytester.path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "golden"], check=True)
    subprocess.run([*git, "commit", "-qm", "golden"], check=True)
    torch.save({"model": {"w": torch.tensor([0.0, 0.5, 0.0, 0.0])}, "step": 4}, folder / "a.pt")
    pytester.makepyfile("def test_golden(ckpt_backcompat):\n    ckpt_backcompat('golden')\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        [
            r".*a.pt: sha256 differs from .*manifest.json; since git HEAD: "
            r"~ model.w: 1/4 elements, max abs 0.5; ~ step: value 3 -> 4.*"
        ]
    )
