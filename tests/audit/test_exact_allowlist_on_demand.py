"""The exact allowlist costs one more static pass per round, so `audit_file` finds it only
when asked (`Report.safe_globals`); `pytest-ckpt audit` asks at once for each walked file,
so a folder walk never holds every file's pickle."""

from __future__ import annotations

import datetime

import torch

import pytest_ckpt.audit as audit
from pytest_ckpt.audit.formats.walk import walk_folder


def test_the_list_is_found_on_first_use_and_once(tmp_path, monkeypatch) -> None:
    path = tmp_path / "dirty.pt"
    torch.save({"w": torch.zeros(2), "when": datetime.date(2026, 1, 1)}, path)
    calls = []
    real = audit._exact
    monkeypatch.setattr(audit, "_exact", lambda *a: calls.append(a) or real(*a))
    report = audit.audit_file(path)
    assert not report.loadable and calls == []
    assert report.safe_globals == ["datetime.date"] == report.safe_globals
    assert len(calls) == 1 and report.exact is None  # the pickle is let go
    assert all(f.allowlist_helps for f in report.findings)


def test_a_walk_settles_each_files_list_as_it_goes(tmp_path) -> None:
    for i in range(3):
        torch.save({"when": datetime.date(2026, 1, 1 + i)}, tmp_path / f"{i}.pt")
    target = walk_folder(str(tmp_path), audit.load_allowlist())
    assert [r.exact for r in target.reports] == [None, None, None]
    assert [r.safe_globals for r in target.reports] == [["datetime.date"]] * 3
