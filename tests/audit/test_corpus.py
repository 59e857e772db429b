"""Every unsafe type planted at a known path is reported at that path; clean state is clean;
and the auditor's verdict equals torch.load(weights_only=True)'s on every corpus file."""

from __future__ import annotations

import pytest

from pytest_ckpt.audit import audit_file
from tests.audit.conftest import torch_verdicts


def test_clean_checkpoints_have_no_findings(corpus) -> None:
    folder, cases = corpus
    for name, case in cases.items():
        if case.path is None:
            report = audit_file(folder / name)
            assert report.loadable, (name, report.findings, report.error)
            assert report.format in ("zip", "legacy")


def test_planted_objects_are_reported_at_their_path(corpus) -> None:
    folder, cases = corpus
    for name, case in cases.items():
        if case.path is None:
            continue
        report = audit_file(folder / name)
        assert not report.loadable, name
        paths = {f.path for f in report.findings}
        assert case.path in paths, (name, paths)
        if case.global_name is not None:
            assert case.global_name in {f.global_name for f in report.findings}, name


def test_fixes_follow_the_shape_of_the_object(corpus) -> None:
    folder, _cases = corpus
    fix = {
        name: audit_file(folder / f"{name}.pt").findings[0]
        for name in (
            "enum",
            "dataclass",
            "deque",
            "module",
            "datetime",
            "namespace",
            "numpy_scalar",
        )
    }
    assert "store .value" in fix["enum"].fix
    assert "to_dict()" in fix["dataclass"].fix
    assert "list(d)" in fix["deque"].fix and not fix["deque"].allowlist_helps
    assert "state_dict()" in fix["module"].fix
    assert "ISO string" in fix["datetime"].fix
    assert "vars(namespace)" in fix["namespace"].fix
    assert ".item()" in fix["numpy_scalar"].fix  # allowlist_helps: the exact list (test_advice)


def test_dataclass_fields_get_attribute_paths(tmp_path) -> None:
    import torch

    from tests.audit.corpus import SeedRecord, Stage

    torch.save({"seed_state": SeedRecord(Stage.BLENDING, 0.5)}, tmp_path / "x.pt")  # type: ignore[arg-type]
    paths = {f.path for f in audit_file(tmp_path / "x.pt").findings}
    assert paths == {"root['seed_state']", "root['seed_state'].stage"}


def test_verdicts_equal_torch_on_the_whole_corpus(corpus) -> None:
    folder, cases = corpus
    files = sorted(folder / name for name in cases)
    torch_says = torch_verdicts(files)
    ours = {str(f): audit_file(f).loadable for f in files}
    assert ours == torch_says


def test_allowing_a_global_clears_it_unless_allowlisting_cannot_help(corpus) -> None:
    folder, _ = corpus
    assert audit_file(folder / "datetime.pt", allow=["datetime.datetime"]).loadable
    deque_report = audit_file(folder / "deque.pt", allow=["collections.deque"])
    assert [f.kind for f in deque_report.findings] == ["unsupported-operation"]
    assert "can only extend lists" in deque_report.findings[0].detail


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_newer_pickle_protocols_are_refused_like_torch_refuses_them(tmp_path, protocol) -> None:
    import torch

    path = tmp_path / f"p{protocol}.pt"
    torch.save({"w": torch.zeros(2)}, path, pickle_protocol=protocol)
    report = audit_file(path)
    assert report.loadable == torch_verdicts([path])[str(path)]
    if not report.loadable:
        assert report.findings[0].kind == "unsupported-opcode"


def test_empty_bytes_are_refused_by_torch_and_by_the_auditor(tmp_path) -> None:
    # Protocol 2 pickles b"" as builtins.bytes() rather than through _codecs.encode.
    import torch

    path = tmp_path / "empty-bytes.pt"
    torch.save({"blob": b""}, path)
    (finding,) = audit_file(path).findings
    assert (finding.path, finding.global_name) == ("root['blob']", "builtins.bytes")
    assert torch_verdicts([path]) == {str(path): False}
