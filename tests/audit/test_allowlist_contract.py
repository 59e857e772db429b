"""If a torch upgrade changes its weights_only allowlist, this fails loudly: the auditor reads
the list at run time, but what each allowed callable returns is ours to review, once per torch
minor version (`pytest_ckpt/audit/torch_allowlists/MAJOR.MINOR.txt`). `make test-torch
TORCH=X.Y.Z` runs this file against another torch."""

from __future__ import annotations

import torch

from pytest_ckpt.audit.allowlist import (
    default_allowlist_names,
    load_allowlist,
    read_reviewed,
    reviewed_allowlist,
)
from pytest_ckpt.torch_support import (
    REVIEWED_ALLOWLISTS,
    parse_torch_version,
    reviewed_torch_versions,
    shown,
)

REVIEWED_TYPES = {"torch.Tensor", "torch.nn.parameter.Parameter", "builtins.bytes", "torch.layout"}
RULES = "audit/torch_rules.py, audit/allowlist.py, audit/oracle.py, audit/shadow_dispatch.py"


def allowed_callables() -> list[str]:
    """The installed torch's allowed names that are called rather than built or pushed."""
    import torch._weights_only_unpickler as wo
    from torch.serialization import StorageType

    return sorted(
        name
        for name, value in wo._get_allowed_globals().items()
        if callable(value) and not isinstance(value, (type, StorageType))
    )


def contract_problems(version: str, names: list[str], callables: list[str]) -> list[str]:
    """Why torch `version` (allowing `names`, calling `callables`) is not the reviewed one;
    each problem says what to review."""
    major_minor = parse_torch_version(version)
    if major_minor not in reviewed_torch_versions():
        newest = shown(reviewed_torch_versions()[-1])
        return [
            f"torch {version} has no reviewed allowlist (newest reviewed: {newest}). Diff its "
            f"torch/_weights_only_unpickler.py, _get_allowed_globals() and torch.load's "
            f"persistent_load against torch {newest}'s; check {RULES} against what changed; "
            f"then write {REVIEWED_ALLOWLISTS}/{shown(major_minor)}.txt from "
            f"{newest}.txt (every allowed name, '-> TYPE' on each callable) with your notes"
        ]
    reviewed = reviewed_allowlist(version)
    added = sorted(set(names) - reviewed.names)
    removed = sorted(reviewed.names - set(names))
    problems = []
    if added or removed:
        problems.append(
            f"torch {version} changed its weights_only allowlist: added {added}, removed "
            f"{removed}. Review {RULES} (result types of new callables), then update "
            f"{reviewed.path}"
        )
    typed = sorted(reviewed.returns)
    if typed != sorted(set(callables) & reviewed.names):
        problems.append(
            f"{reviewed.path}: '-> TYPE' must be on exactly the allowed callables {callables}, "
            f"not {typed}"
        )
    return problems


def test_torch_allowlist_is_the_reviewed_one() -> None:
    problems = contract_problems(torch.__version__, default_allowlist_names(), allowed_callables())
    assert problems == [], "\n".join(problems)


def test_an_unreviewed_newer_torch_fails_the_contract_saying_what_to_review() -> None:
    newest = reviewed_torch_versions()[-1]
    newer = f"{newest[0]}.{newest[1] + 1}.0"
    problems = contract_problems(newer, default_allowlist_names(), allowed_callables())
    assert len(problems) == 1
    assert (
        f"torch {newer} has no reviewed allowlist (newest reviewed: {shown(newest)})"
        in (problems[0])
    )
    assert "_weights_only_unpickler.py" in problems[0]
    assert f"{shown((newest[0], newest[1] + 1))}.txt" in problems[0]


def test_a_changed_allowlist_fails_the_contract_naming_the_change() -> None:
    names = [*default_allowlist_names(), "torch.bcomplex64"]
    names.remove("builtins.set")
    problems = contract_problems(torch.__version__, names, allowed_callables())
    assert "added ['torch.bcomplex64'], removed ['builtins.set']" in problems[0]


def test_every_allowed_callable_has_a_reviewed_result_type() -> None:
    callables = allowed_callables()
    assert callables, "torch's allowlist has rebuild functions"
    allow = load_allowlist()
    missing = [name for name in callables if name not in allow.returns]
    assert missing == [], f"allowed callables with no reviewed result type: {missing}"


def test_result_types_come_from_the_review_of_the_installed_torch() -> None:
    reviewed = reviewed_allowlist(torch.__version__)
    assert dict(load_allowlist().returns) == dict(reviewed.returns)
    assert reviewed.returns["_codecs.encode"] == "builtins.bytes"


def test_every_review_is_well_formed() -> None:
    """Each file: sorted unique names, result types the auditor knows."""
    for version in reviewed_torch_versions():
        path = REVIEWED_ALLOWLISTS / f"{shown(version)}.txt"
        lines = [
            line.partition("->")[0].strip()
            for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        assert lines == sorted(set(lines)), f"{path}: names must be sorted and unique"
        reviewed = read_reviewed(path)
        assert set(reviewed.returns.values()) <= REVIEWED_TYPES, path
        assert reviewed.returns, f"{path} gives no result types"


def test_each_torch_uses_its_own_review_else_the_nearest_older_one() -> None:
    reviewed = reviewed_torch_versions()
    assert reviewed[0] == (2, 10), "the oldest review is the hardened torch (2.10)"
    for version in reviewed:
        assert reviewed_allowlist(f"{shown(version)}.7+cpu").version == shown(version)
    assert reviewed_allowlist("2.9.1").version == "2.10"  # older than every review: the oldest
    newest = reviewed[-1]
    assert reviewed_allowlist(f"{newest[0]}.{newest[1] + 3}.0").version == shown(newest)
    gaps = [(2, minor) for minor in range(10, newest[1]) if (2, minor) not in reviewed]
    for gap in gaps:  # e.g. 2.11 uses 2.10's review
        nearest = max(version for version in reviewed if version < gap)
        assert reviewed_allowlist(f"{shown(gap)}.0").version == shown(nearest)


def test_user_safe_globals_are_read_at_scan_time() -> None:
    import datetime

    assert "datetime.datetime" not in load_allowlist().names
    with torch.serialization.safe_globals([datetime.datetime]):
        assert "datetime.datetime" in load_allowlist().names
        assert "datetime.datetime" in load_allowlist().classes  # asked twice: kept
    assert "datetime.datetime" not in load_allowlist().names  # and gone again with it
    assert "datetime.datetime" not in load_allowlist().classes
