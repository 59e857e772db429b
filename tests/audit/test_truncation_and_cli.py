"""Every truncation of a small checkpoint is 'unreadable' (exit 2), one line, no traceback;
and the CLI's formats and exit statuses."""

from __future__ import annotations

import json

import pytest
import torch

from pytest_ckpt.audit import audit_file
from pytest_ckpt.cli import main


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_every_truncation_is_unreadable_or_refused_never_a_crash(tmp_path, legacy) -> None:
    path = tmp_path / "small.pt"
    torch.save({"w": torch.arange(3.0)}, path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    for end in range(len(data)):
        cut.write_bytes(data[:end])
        report = audit_file(cut)  # must not raise
        assert report.error is not None, end  # legacy too: pickles whole, storage bytes cut
        assert "\n" not in report.error


def test_cli_exit_statuses_and_one_line_errors(tmp_path, capsys) -> None:
    ok, bad, empty = tmp_path / "ok.pt", tmp_path / "bad.pt", tmp_path / "empty.pt"
    torch.save({"w": torch.zeros(1)}, ok)
    torch.save({"when": __import__("datetime").date(2026, 1, 1)}, bad)
    empty.write_bytes(b"")
    assert main(["audit", str(ok)]) == 0
    assert main(["audit", str(ok), str(bad)]) == 1
    assert main(["audit", str(ok), str(bad), str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"pytest-ckpt audit: {empty}: empty file"]
    assert main(["audit", str(bad), "--allow", "datetime.date"]) == 0


def test_cli_text_json_and_sarif(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"h": __import__("collections").deque([1])}, bad)
    main(["audit", str(bad)])
    text = capsys.readouterr().out
    assert f"{bad}: 1 finding(s) (zip)" in text
    assert "root['h']: unsupported global collections.deque. Fix: store list(d)" in text
    assert "add_safe_globals would not be enough" in text
    main(["audit", "--json", str(bad)])
    (report,) = json.loads(capsys.readouterr().out)["files"]
    assert report["loadable"] is False
    assert report["findings"][0]["path"] == "root['h']"
    main(["audit", "--sarif", str(bad)])
    sarif = json.loads(capsys.readouterr().out)
    (result,) = sarif["runs"][0]["results"]
    assert result["ruleId"] == "unsupported-global"
    assert result["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "root['h']"


def test_cli_rejects_bad_arguments_with_usage(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "x.pt", "--allow", "nodot"])
    assert exit_info.value.code == 2
    assert "expected a dotted name" in capsys.readouterr().err
