"""Differential: `audit_file(...).loadable` equals `torch.load(weights_only=True)` on
generated pickles and on 1-2 byte mutations of a real data.pkl, zipped as torch checkpoints.

torch is the specification, so this test is the proof of the verdict: it fails on any
disagreement and prints the cases. The default run is a few hundred seeded cases (one torch
subprocess per batch); the nightly run is 100k:

    .venv/bin/python -m pytest -m slow -k differential tests/audit/test_differential_torch.py

(plus 20k dicts of ordinary calls with odd arguments, issue 20).
"""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pytest
import torch

from pytest_ckpt.audit import audit_file
from pytest_ckpt.audit.allowlist import load_allowlist
from tests.audit.conftest import torch_verdicts
from tests.audit.pickle_grammar import (
    Grammar,
    archive_members,
    data_members,
    mutations,
    real_checkpoint,
)

ALLOWLIST = load_allowlist()


def _write(path: Path, data_pkl: bytes, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        for name, body in members.items():
            if name != "data.pkl":
                archive.writestr(f"archive/{name}", body)
    return path


def disagreements(tmp: Path, cases: list[tuple[bytes, dict[str, bytes]]]) -> tuple[list, list]:
    """Write each case, audit it here, ask torch in one fresh process. Returns the cases
    where the verdicts differ (`file: audit=.. torch=..` lines) and, apart, those torch
    loads that the auditor declines to vouch for by design (a `resource-limit` finding:
    a size the file chooses for a constructor, or a call that reads tensor bytes; a
    `cannot-verify` one: a nested tensor, or an operator on a tensor stage 2 stood in for)."""
    paths = [_write(tmp / f"case{i}.pt", data, members) for i, (data, members) in enumerate(cases)]
    ours = {str(path): audit_file(path, allowlist=ALLOWLIST) for path in paths}
    torch_says = torch_verdicts(paths)
    wrong, declined = [], []
    for path, report in ours.items():
        if report.loadable == torch_says[path]:
            continue
        detail = report.error or [f.detail for f in report.findings] or report.notes
        line = f"{path}: audit={report.loadable} torch={torch_says[path]} {detail}"
        kinds = {finding.kind for finding in report.findings}
        by_design = kinds and kinds <= {"resource-limit", "cannot-verify"}
        (declined if torch_says[path] and by_design else wrong).append(line)
    return wrong, declined


def check(tmp: Path, cases: list) -> None:
    wrong, declined = disagreements(tmp, cases)
    print(f"differential: {len(cases)} cases, {len(wrong)} disagreements, {len(declined)} declined")
    assert wrong == [], f"{len(wrong)} of {len(cases)} disagree:\n" + "\n".join(wrong[:20])
    assert len(declined) <= len(cases) // 200, "\n".join(declined[:20])


def generated_cases(
    seed: int, grammar_cases: int, mutation_cases: int, *, ordinary: int = 0
) -> list[tuple]:
    """Grammar programs over an archive holding one 32-byte storage, then `ordinary` dicts of
    ordinary calls with odd arguments (issue 20), then mutations of a real save's data.pkl in
    that save's archive."""
    rng = random.Random(seed)
    tensor_members = data_members(archive_members({"w": torch.zeros(8)}))
    grammar = Grammar(rng)
    cases = [(grammar.program(), tensor_members) for _ in range(grammar_cases)]
    calls = Grammar(rng, ordinary=True)
    cases += [(calls.program(), tensor_members) for _ in range(ordinary)]
    real = real_checkpoint()
    cases += [(data, real) for data in mutations(real["data.pkl"], rng, mutation_cases)]
    return cases


def test_differential_default_run_has_no_disagreements(tmp_path) -> None:
    check(tmp_path, generated_cases(seed=14, grammar_cases=250, mutation_cases=150, ordinary=100))


@pytest.mark.slow
@pytest.mark.parametrize("batch", range(50))
def test_differential_nightly_100k_has_no_disagreements(tmp_path, batch) -> None:
    """100k cases in 50 batches of 2000 (1200 generated, 800 mutations), a seed per batch."""
    check(tmp_path, generated_cases(seed=1000 + batch, grammar_cases=1200, mutation_cases=800))


@pytest.mark.slow
@pytest.mark.parametrize("batch", range(10))
def test_differential_nightly_ordinary_calls_have_no_disagreements(tmp_path, batch) -> None:
    """20k dicts of ordinary calls with odd arguments (the calls `plain_calls` judges without
    torch's unpickler), in 10 batches of 2000, a seed per batch."""
    check(
        tmp_path,
        generated_cases(seed=5000 + batch, grammar_cases=0, mutation_cases=0, ordinary=2000),
    )
