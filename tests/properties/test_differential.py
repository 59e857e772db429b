"""Differential: on generated payloads, the auditor's verdict equals torch.load's, and for
unsafe payloads the reported path is the planted path."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings

from pytest_ckpt import strategies as cst
from pytest_ckpt.audit import audit_file
from pytest_ckpt.audit.allowlist import load_allowlist
from pytest_ckpt.checks.compare import diff_values

ALLOWLIST = load_allowlist()
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def torch_accepts(path: Path) -> bool:
    try:
        with torch.serialization.safe_globals([]):
            torch.load(path, weights_only=True)
    except Exception:  # the verdict is the point: any refusal counts as "not loadable"
        return False
    return True


@SETTINGS
@given(cst.checkpoint_payloads())
def test_clean_payloads_load_and_come_back_equal(payload) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "p.pt")
        torch.save(payload, path)
        report = audit_file(path, allowlist=ALLOWLIST)
        assert report.loadable == torch_accepts(path) is True, report.findings
        assert diff_values(payload, torch.load(path, weights_only=True)) == []


@SETTINGS
@given(cst.unsafe_payloads())
def test_unsafe_payloads_are_refused_at_the_planted_path(case) -> None:
    payload, planted = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "p.pt")
        torch.save(payload, path)
        report = audit_file(path, allowlist=ALLOWLIST)
        assert report.loadable == torch_accepts(path) is False
        assert planted in {f.path for f in report.findings}, (planted, report.findings)
