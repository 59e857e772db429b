"""If a torch upgrade changes its weights_only allowlist, this fails loudly: the auditor reads
the list at run time, but what each allowed callable returns (allowlist.py) is ours to
review."""

from __future__ import annotations

from pathlib import Path

from pytest_ckpt.audit.allowlist import default_allowlist_names, load_allowlist

REVIEWED = Path(__file__).with_name("torch_allowlist.txt")


def test_torch_allowlist_is_the_reviewed_one() -> None:
    reviewed = [
        line for line in REVIEWED.read_text().splitlines() if line and not line.startswith("#")
    ]
    current = default_allowlist_names()
    added = sorted(set(current) - set(reviewed))
    removed = sorted(set(reviewed) - set(current))
    assert not added and not removed, (
        f"torch changed its weights_only allowlist: added {added}, removed {removed}. Review "
        f"pytest_ckpt/audit/allowlist.py (result types of new callables), then update {REVIEWED}"
    )


def test_every_allowed_callable_has_a_reviewed_result_type() -> None:
    import torch._weights_only_unpickler as wo
    from torch.serialization import StorageType

    allow = load_allowlist()
    callables = [
        name
        for name, value in wo._get_allowed_globals().items()
        if callable(value) and not isinstance(value, (type, StorageType))
    ]
    assert callables, "torch's allowlist has rebuild functions"
    missing = [name for name in callables if name not in allow.returns]
    assert missing == [], f"allowed callables with no reviewed result type: {missing}"


def test_user_safe_globals_are_read_at_scan_time() -> None:
    import datetime

    import torch

    assert "datetime.datetime" not in load_allowlist().names
    with torch.serialization.safe_globals([datetime.datetime]):
        assert "datetime.datetime" in load_allowlist().names
