"""What the auditor prints is bounded and is data: a file cannot forge an "ok" line, make a
report parse badly, or make one grow with its nesting depth or name lengths."""

from __future__ import annotations

import json
import pathlib
import struct
import subprocess
import sys
import time

import torch

from pytest_ckpt.audit import audit_file
from pytest_ckpt.audit.nodes import MAX_FINDINGS, Finding
from pytest_ckpt.audit.render import artifact_uri, render_json, render_sarif, render_text
from tests.audit.advice_fixtures import Record, Stage
from tests.audit.test_advice import torch_with_allowlists
from tests.audit.test_hostile import PROTO2, global_op, write_zip
from tests.forked_runs import run_python

REPO = pathlib.Path(__file__).resolve().parents[2]


def _unicode(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(data)) + data


def _newobj_list(count: int, module: str = "tests.audit.advice_fixtures") -> bytes:
    """[Record() for _ in range(count)] as NEWOBJ calls: one finding each."""
    body = PROTO2 + b"](" + global_op(module, "Record") + b"q\x00)\x81"
    body += b"h\x00)\x81" * (count - 1)
    return body + b"e."


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_python(
        [sys.executable, "-m", "pytest_ckpt.cli", "audit", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def test_control_characters_in_names_cannot_forge_report_lines(tmp_path):
    forged = "system\r\x1b[2K\nevil.pt: ok (zip, 0 storages): loads with weights_only=True\u2028"
    payload = PROTO2 + _unicode("os") + _unicode(forged) + b"\x93" + _unicode("id") + b"\x85R."
    path = write_zip(tmp_path / "evil.pt", payload)
    text = render_text([audit_file(path)])
    assert not any(ch in text for ch in "\r\x1b\u2028")
    assert "\nevil.pt: ok" not in text and "\\nevil.pt: ok" in text
    assert text.splitlines()[0].startswith(f"{path}: ") and "finding(s)" in text
    report = audit_file(path)
    names = [f["global_name"] for f in json.loads(render_json([report]))[0]["findings"]]
    assert f"os.{forged}" in names  # JSON keeps the data as it is, escaped by json.dumps
    json.loads(render_sarif([report]))


def test_sarif_uri_is_percent_encoded_and_every_report_parses(tmp_path):
    path = tmp_path / "a b%#?\x1b.pt"
    torch.save({"when": __import__("datetime").date(2026, 1, 1)}, path)
    result = _cli("--sarif", str(path))
    sarif = json.loads(result.stdout)
    uri = sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert uri["uri"] == artifact_uri(str(path))
    assert uri["uri"].startswith("file:///") and uri["uri"].endswith("/a%20b%25%23%3F%1B.pt")
    assert artifact_uri("rel dir/x.pt") == "rel%20dir/x.pt"
    assert artifact_uri("/abs/\udcff.pt") == "file:///abs/%FF.pt"  # bytes that are not UTF-8
    (report,) = json.loads(render_json([audit_file(path)]))
    assert report["safe_globals"] == ["datetime.date"] and report["findings_omitted"] == 0


def test_findings_are_capped_per_file_and_the_rest_counted(tmp_path):
    count = 50_000
    path = write_zip(tmp_path / "many.pt", _newobj_list(count))
    assert path.stat().st_size < 1_000_000
    start = time.perf_counter()
    report = audit_file(path)
    assert len(report.findings) == MAX_FINDINGS
    assert len(report.findings) + report.findings_omitted == count
    # the repeats past the cap ask for nothing new: the list is still exact
    assert report.safe_globals == ["tests.audit.advice_fixtures.Record"]
    text, sarif = render_text([report]), render_sarif([report])
    assert time.perf_counter() - start < 30
    assert len(text) < 20_000 and f"and {count - MAX_FINDINGS} more finding(s)" in text
    assert len(json.loads(sarif)["runs"][0]["results"]) == MAX_FINDINGS + 1
    assert len(json.loads(render_json([report]))[0]["findings"]) == MAX_FINDINGS


def test_repeats_are_grouped(tmp_path):
    path = tmp_path / "records.pt"
    torch.save({"records": [Record(float(i)) for i in range(160)]}, path)
    report = audit_file(path)
    assert len(report.findings) == 160
    lines = render_text([report]).splitlines()
    assert len(lines) < 25
    assert "Record: 160 objects at 160 paths. Fix: " in lines[1]
    assert lines[2:4] == ["    root['records'][0]", "    root['records'][1]"]
    assert lines[-2] == "    ... and 140 more object(s) of this kind (--json lists every path)"


def test_paths_cost_linear_time_in_nesting_depth(tmp_path):
    """Deep plain nesting, then MAX_FINDINGS flagged objects nested below it: each path is
    built from a bounded number of steps."""
    plain, flagged = 100_000, MAX_FINDINGS  # before: 55 s, quadratic; now about 1 s
    body = PROTO2 + b"]" * plain  # nested lists
    for i in range(flagged):  # Record() whose state dict holds the next one
        body += global_op("tests.audit.advice_fixtures", "Record") if i == 0 else b"h\x00"
        body += (b"q\x00" if i == 0 else b"") + b")\x81}" + _unicode("r")
    body += b"N" + b"sb" * flagged + b"a" * plain + b"."
    path = write_zip(tmp_path / "deep.pt", body)
    start = time.perf_counter()
    report = audit_file(path)
    elapsed = time.perf_counter() - start
    assert len(report.findings) == flagged and elapsed < 10, elapsed
    assert max(len(f.path) for f in report.findings) < 1_000
    assert "levels)..." in report.findings[-1].path


def test_a_huge_global_name_is_not_copied_into_every_path(tmp_path):
    huge = "m" * 4_000_000
    pair = b"h\x00)\x81" * 2  # {K(): K(), ...}: each value's path holds its key
    keyed = PROTO2 + b"}(" + global_op(huge, "K") + b"q\x00)\x81" + b"h\x00)\x81" + pair * 50
    keyed += b"u."
    nested = PROTO2 + b"](" + global_op(huge, "K") + b"q\x00)\x81" + b"h\x00)\x81" * 50 + b"e."
    for payload in (keyed, nested):
        path = write_zip(tmp_path / "huge.pt", payload)
        report = audit_file(path)
        assert not report.loadable
        assert len(render_json([report])) < 2_000 * len(report.findings)  # not 4 MB each
        assert len(render_text([report])) < 50_000
        assert "(4000002 characters)" in report.findings[0].detail


def test_past_the_cap_every_global_is_still_named_and_the_list_loads(tmp_path):
    """One run names everything: 1500 objects of one class fill the cap, and the one Enum
    member after them is still a finding of its own; the list the audit offers is applied
    in torch and loads the file."""
    path = tmp_path / "many_then_one.pt"
    torch.save({"records": [Record(float(i)) for i in range(1500)], "stage": Stage.BLENDING}, path)
    report = audit_file(path)
    assert report.findings_omitted > 0
    named = {finding.global_name for finding in report.findings}
    assert {"tests.audit.advice_fixtures.Record", "tests.audit.advice_fixtures.Stage"} <= named
    stage = [f for f in report.findings if f.global_name == "tests.audit.advice_fixtures.Stage"]
    assert [f.path for f in stage] == ["root['stage']"]
    assert report.safe_globals == [
        "tests.audit.advice_fixtures.Record",
        "tests.audit.advice_fixtures.Stage",
    ]
    assert torch_with_allowlists({"all": (path, report.safe_globals)}) == {"all": "ok"}
    assert "safe_globals([tests.audit.advice_fixtures.Record" in render_text([report])


def test_distinct_globals_past_the_cap_are_counted_and_no_list_is_offered(tmp_path):
    """A file naming more distinct globals than the cap: the rest are counted, the report
    stays bounded, and no list is vouched for."""
    count = MAX_FINDINGS + 50
    body = PROTO2 + b"]("
    for i in range(count):
        body += global_op("nomod", f"Name{i}")
    path = write_zip(tmp_path / "names.pt", body + b"e.")
    report = audit_file(path)
    assert len(report.findings) == MAX_FINDINGS
    assert report.findings_omitted == 50
    assert report.safe_globals is None


def test_a_finding_copied_for_another_object_keeps_every_field():
    """`Finding.copy_at` spells out dataclasses.replace: a field added later must be in it."""
    import dataclasses

    values = {f.name: f"<{f.name}>" for f in dataclasses.fields(Finding)}
    values.update(also_at=["root['a']"], more_sites=3, needs=("x.Y",), allowlist_helps=True)
    finding = Finding(**values)
    expected = dataclasses.replace(finding, offset=7, also_at=[], more_sites=0)
    assert finding.copy_at(7) == expected
