"""The exact allowlist of one file: the global names that, passed to
`torch.serialization.safe_globals`, make torch load it, or None when no list can.

The names a file's findings point at are not enough by themselves: once a class is allowed,
torch goes on to check what the pickle does with it (a numpy array's dtype is BUILT as an
instance of a concrete class the file never names; a deque is then extended, which torch
refuses whatever is allowed). So the file is audited again with the candidate names allowed,
and what the new findings need is added, until it loads or something no name can fix is
left. Only `Finding.needs` feeds the list, and `needs` only ever holds classes and numpy's
rebuilders (`global_kinds.advisable`): a function is never offered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from pytest_ckpt.audit.allowlist import Allowlist
from pytest_ckpt.audit.global_kinds import kind_of
from pytest_ckpt.audit.nodes import Finding

MAX_ROUNDS = 6  # each round allows what the last one's findings named; files need 1 to 3


def with_names(allowlist: Allowlist, names: Sequence[str]) -> Allowlist:
    """`allowlist` plus `names`, as `safe_globals(names)` would extend torch's (classes are
    NEWOBJ/BUILD targets; numpy's rebuilders are functions, only callable)."""
    return dataclasses.replace(
        allowlist,
        names=allowlist.names | set(names),
        classes=allowlist.classes | {n for n in names if kind_of(n) == "class"},
    )


def exact_safe_globals(
    findings: Sequence[Finding],
    allowlist: Allowlist,
    scan: Callable[[Allowlist], Sequence[Finding] | None],
) -> list[str] | None:
    """The sorted names, or None. `scan(allowlist)` audits the file again (None: it could
    not be read or has findings past the cap, so no list can be vouched for)."""
    allowed: set[str] = set()
    current: Sequence[Finding] | None = findings
    for _round in range(MAX_ROUNDS):
        if current is None:
            return None
        if not current:
            return sorted(allowed)
        if any(not f.needs for f in current):
            return None
        wanted = {name for f in current for name in f.needs}
        if wanted <= allowed:  # allowed already and still refused: our mirror cannot say
            return None
        allowed |= wanted
        current = scan(with_names(allowlist, sorted(allowed)))
    return None
