"""Issue 19, the auditor's side: every object torch would refuse is its own finding at its
own path, every alias is listed, and one round of the advised fixes makes the file load
(torch.load(weights_only=True) in a subprocess is the judge)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from pytest_ckpt import strategies as cst
from pytest_ckpt.audit import audit_file
from pytest_ckpt.audit.render import render_json, render_text
from tests.support import seed_slot_state as seeds
from tests.support.apply_fixes import apply_fixes, named_paths, parse_path

REPO = pathlib.Path(__file__).resolve().parents[2]
STAGES = (seeds.SeedStage.GERMINATED, seeds.SeedStage.BLENDING, seeds.SeedStage.PROBATIONARY)
LOAD_ALL = """
import json, sys, torch
verdicts = {}
for path in json.loads(sys.argv[1]):
    try:
        torch.load(path, weights_only=True)
        verdicts[path] = "ok"
    except Exception as err:  # the verdict is the point
        verdicts[path] = str(err).splitlines()[0]
print(json.dumps(verdicts))
"""


def torch_loads(paths: list[pathlib.Path]) -> dict[str, str]:
    """torch.load(weights_only=True) on each file, in one fresh process: "ok" or why not."""
    out = subprocess.run(
        [sys.executable, "-c", LOAD_ALL, json.dumps([str(p) for p in paths])],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def seed_files(tmp_path_factory) -> dict[seeds.SeedStage, tuple[pathlib.Path, dict]]:
    folder = tmp_path_factory.mktemp("seeds")
    files = {}
    for stage in STAGES:
        state = seeds.checkpoint_at(stage)
        torch.save(state, folder / f"{stage.name}.pt")
        files[stage] = (folder / f"{stage.name}.pt", state)
    return files


def test_every_refused_object_and_every_alias_is_named_as_the_projects_walk_names_them(
    seed_files,
):
    counts = {}
    for stage, (path, state) in seed_files.items():
        report = audit_file(path)
        named = named_paths(report.findings)
        assert sorted(named) == sorted(seeds.offending_paths(state)), stage
        assert all(parse_path(p) for p in named)  # documented syntax only, no `(args)`
        counts[stage.name] = len(named)
        assert json.loads(render_json([report]))[0]["findings"][0]["also_at"] is not None
    assert counts == {"GERMINATED": 10, "BLENDING": 15, "PROBATIONARY": 17}


def test_objects_of_one_class_are_grouped_under_one_fix_line_with_every_path(seed_files):
    path, _state = seed_files[seeds.SeedStage.PROBATIONARY]
    text = render_text([audit_file(path)])
    lines = text.splitlines()
    assert lines[0].endswith(": 14 finding(s) at 17 path(s) (zip)")
    (enum_line,) = [i for i, line in enumerate(lines) if "SeedStage: 4 objects at 6 paths" in line]
    slot = "root['state_dict']['seed_slots.r0c0._extra_state']['seed_state']"
    assert lines[enum_line + 1 : enum_line + 5] == [
        f"    {slot}.stage (the same object is also at {slot}.stage_history[3][0])",
        f"    {slot}.previous_stage (the same object is also at {slot}.stage_history[2][0])",
        f"    {slot}.stage_history[0][0]",
        f"    {slot}.stage_history[1][0]",
    ]
    assert sum(line.count("root[") for line in lines) == 17
    assert "Linear" not in "".join(line for line in lines if line.startswith("    "))


def test_each_objects_verdict_is_its_own_and_torch_agrees(seed_files, tmp_path):
    """allow-listing is enough for the Enum, the datetime, the module and the metrics, each
    alone; the deque alone is what no list fixes; the file as a whole has no list."""
    path, state = seed_files[seeds.SeedStage.PROBATIONARY]
    report = audit_file(path)
    helps = {f.global_name.rpartition(".")[2]: f for f in report.findings}
    assert {name for name, f in helps.items() if not f.allowlist_helps} == {"deque"}
    assert report.safe_globals is None
    seed_state = state["state_dict"]["seed_slots.r0c0._extra_state"]["seed_state"]
    alone = {
        "SeedStage": seed_state.stage,
        "datetime": seed_state.stage_entered_at,
        "BlendGate": state["state_dict"]["seed_slots.r0c0._extra_state"]["blend_module"],
        "SeedMetrics": seed_state.metrics,
    }
    script = ["import torch, json, sys", "verdicts = {}"]
    for name, obj in alone.items():
        torch.save({"x": obj}, tmp_path / f"{name}.pt")
        names = list(helps[name].needs)
        script.append(
            f"with torch.serialization.safe_globals([__import__('pydoc').locate(n) for n in "
            f"{names!r}]):\n    verdicts[{name!r}] = repr(torch.load({str(tmp_path / name)!r} "
            "+ '.pt', weights_only=True)['x'])[:20]"
        )
    script.append("print(json.dumps(verdicts))")
    out = subprocess.run(
        [sys.executable, "-c", "\n".join(script)], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(json.loads(out.stdout)) == sorted(alone)


def test_one_round_of_the_advised_fixes_makes_every_stage_load(seed_files, tmp_path):
    fixed = []
    for stage, (path, _saved) in seed_files.items():
        report = audit_file(path)
        state = apply_fixes(seeds.checkpoint_at(stage), report.findings)
        torch.save(state, tmp_path / f"{stage.name}.pt")
        fixed.append(tmp_path / f"{stage.name}.pt")
        assert audit_file(fixed[-1]).loadable, stage
    assert set(torch_loads(fixed).values()) == {"ok"}


def test_one_round_of_fixes_makes_generated_states_load(tmp_path):
    """Hypothesis plants several objects of one class, aliases, dict keys, tuples, deques
    and sets; the auditor names exactly the planted paths, and one round of its fixes
    loads (every fixed file is then loaded by torch in one subprocess)."""
    saved: list[pathlib.Path] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(cst.unsafe_payloads(max_objects=6))
    def one_round(case) -> None:
        payload, paths = case
        path = tmp_path / f"{len(saved)}.pt"
        torch.save(payload, path)
        report = audit_file(path)
        assert sorted(named_paths(report.findings)) == list(paths), report.findings
        torch.save(apply_fixes(payload, report.findings), path)
        assert audit_file(path).loadable
        saved.append(path)

    one_round()
    assert set(torch_loads(saved).values()) == {"ok"}


def test_one_round_of_fixes_makes_the_legacy_v0_fixtures_load(tmp_path):
    fixed = []
    for path in sorted((REPO / "fixtures" / "v0").glob("*.pt")):
        report = audit_file(path)  # a DORMANT slot's extra state holds nothing: it loads
        assert report.loadable is ("dormant" in path.name), path.name
        assert all(parse_path(p) for p in named_paths(report.findings))
        state = torch.load(path, weights_only=False)  # our own fixture, written by us
        torch.save(apply_fixes(state, report.findings), tmp_path / path.name)
        fixed.append(tmp_path / path.name)
    assert len(fixed) == 14
    assert set(torch_loads(fixed).values()) == {"ok"}
