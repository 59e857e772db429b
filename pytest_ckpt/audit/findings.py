"""Where each finding is: one walk from the root gives every refused object its path, every
other path of the same object (`also_at`), and what its fix covers.

Every object torch would refuse is its own finding (`TorchRules._take_over` gives each
object built from a memoized global its own copy), at its first (shortest) route from the root;
every other route to it is listed. A fix that replaces an object whole (an nn.Module by its
state_dict(), a datetime by isoformat(), an Enum by its value: `advice.keeps_contents` says
which do not) takes what the object holds with it: a refused object reached only through
such an object, or through another refused object's constructor arguments or pickled state
(a datetime's timezone, the Linear inside a module, a numpy array's dtype), is folded into
that object's finding (named on it, its names added to its `needs`), not reported alone.
A fix that keeps the contents (a dataclass -> dict of its fields, a deque -> list) leaves
them in place: each refused object inside is its own finding. Names that run code are never
folded. A route through such an owner is no path to fix by: it is never listed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple

from pytest_ckpt.audit.advice import (
    ENUM_FIX,
    FLOAT_FIX,
    GENERIC_KIND,
    INT_FIX,
    MODULE_FIX,
    NUMPY_RNG_FIX,
    OBJECT_STATE_FIX,
    Fix,
    fix_for_name,
    keeps_contents,
)
from pytest_ckpt.audit.global_kinds import advisable, kind_of, runs_code
from pytest_ckpt.audit.nodes import (
    MAX_FINDINGS,
    STATE_LABEL,
    Finding,
    Node,
    attribute_label,
    value_is,
)

MODULE_STATE = frozenset({"._parameters", "._buffers", "._modules"})  # an nn.Module's state
_SHAPE_FIXES = {
    "enum-like": (ENUM_FIX, "looks like an Enum member"),
    "object-state": (OBJECT_STATE_FIX, "an object with attributes"),
    "float-like": (FLOAT_FIX, "a float subclass"),
    "int-like": (INT_FIX, "an int subclass"),
}
_OWNING_LABELS = ("(args)", "(kwargs)", ".__setstate__")  # what rebuilds the object itself
_FOLDABLE = ("unsupported-global", "unsupported-operation")
MAX_ROUTES = 10 * MAX_FINDINGS  # other routes to flagged objects kept per pickle; then counted
_MAX_PATH_PARTS = 40  # longer paths are shown with the middle elided
_HEAD = 5  # labels kept at the start of an elided path

Route = tuple[Node | None, str | int]  # (parent, label); (None, "root") is the root itself


class _Site(NamedTuple):
    """How the walk first reached a node: its parent, label, depth, first labels, and the
    flagged object whose fix takes this node with it (None: a place of its own).
    A tuple: the walk makes one per object of the pickle."""

    parent: Node | None
    label: str | int
    depth: int
    head: tuple[str | int, ...]
    owner: Node | None


new_site = tuple.__new__  # NamedTuple's own __new__ is a Python function: this is the C one


def collect_findings(root: Any, loose: list[Finding], flagged: list[Node]) -> list[Finding]:
    """Every finding with its path, `also_at`, fix, `needs` and per-object verdict.

    The walk records one `_Site` per node; a path string is built only for routes to
    flagged nodes, from at most _MAX_PATH_PARTS steps, so a deeply nested file costs linear
    time. At most MAX_ROUTES other routes are kept per pickle (the rest are counted in
    `more_sites`), so a hostile file that references one object a million times stays
    bounded.
    """
    advisable_names: dict[str, bool] = {}  # asked once per name: many objects share one
    for node in flagged:
        for finding in node.findings:
            _refine_fix(finding, node)
            name = finding.global_name or ""
            if finding.kind == "unsupported-global" and not finding.needs:
                if name not in advisable_names:
                    advisable_names[name] = advisable(name)
                if advisable_names[name]:
                    finding.needs = (name,)
            if node.blocks_allowlisting:
                finding.needs = ()
    whole = {id(n) for n in flagged if n.findings and not keeps_contents(n.findings[0].fix_kind)}
    walked = flagged and isinstance(root, Node)
    sites, routes, counts = _walk(root, whole) if walked else ({}, {}, {})
    findings = []
    for finding in loose:
        finding.path = finding.path or "root"
        findings.append(finding)
    inner_of: dict[int, list[Node]] = {}  # id(owner) -> the flagged nodes its fix takes along
    by_id: dict[int, Node] = {}
    for node in flagged:
        site = sites.get(id(node))
        if site is None:
            _place(node, None, [], 0, sites)
            findings += node.findings
            continue
        free: list[Route] = []
        owners: list[Node] = []
        for parent, label in [(site.parent, site.label), *routes.get(id(node), ())]:
            owner = _owner_of(parent, label, sites, whole)
            if owner is None:
                free.append((parent, label))
            elif owner is not node:
                owners.append(owner)
        # whether its fix folds into its owners' (asked only where the answer matters)
        foldable = (bool(free) and not owners) or all(_foldable(f) for f in node.findings)
        if foldable:
            for owner in owners:
                inner_of.setdefault(id(owner), []).append(node)
                by_id[id(owner)] = owner
        if free or not foldable:
            kept = free or [(site.parent, site.label)]
            unlisted = counts.get(id(node), 0) - len(routes.get(id(node), ()))
            _place(node, site, kept, unlisted, sites)
            findings += node.findings
    for owner in _deepest_first(inner_of, by_id):
        _fold(owner.findings[0], [f for inner in inner_of[id(owner)] for f in inner.findings])
    for node in flagged:
        for finding in node.findings:
            finding.allowlist_helps = bool(finding.needs)
    return findings


def _walk(
    root: Node, whole: set[int]
) -> tuple[dict[int, _Site], dict[int, list[Route]], dict[int, int]]:
    """Breadth first from the root: each node's first route (`_Site`), the other routes to
    flagged nodes (at most MAX_ROUTES kept), and how many other routes each has."""
    sites: dict[int, _Site] = {id(root): new_site(_Site, (None, "root", 0, ("root",), None))}
    routes: dict[int, list[Route]] = {}
    counts: dict[int, int] = {}
    budget = MAX_ROUTES
    queue: deque[Node] = deque([root])
    while queue:
        node = queue.popleft()
        site = sites[id(node)]
        depth = site.depth + 1
        for label, child in node.children:
            key = id(child)
            if key not in sites:
                if not (child.children or child.findings):
                    continue  # a plain leaf (a tensor): no route to anything flagged
                head = (*site.head, label) if depth < _HEAD else site.head
                owns = node.findings and _owns(node, label, whole)
                owner = node if owns else site.owner
                sites[key] = new_site(_Site, (node, label, depth, head, owner))
                queue.append(child)
            elif child.findings:
                counts[key] = counts.get(key, 0) + 1
                if budget:
                    budget -= 1
                    routes.setdefault(key, []).append((node, label))
    return sites, routes, counts


def _owns(node: Node, label: str | int, whole: set[int]) -> bool:
    """Does `node`'s fix take what is under `label` with it? Its constructor arguments and
    pickled state always; its BUILD state too when the fix replaces it whole."""
    if label == STATE_LABEL:
        return id(node) in whole
    return str(label).startswith(_OWNING_LABELS)


def _owner_of(
    parent: Node | None, label: str | int, sites: dict[int, _Site], whole: set[int]
) -> Node | None:
    """The flagged object whose fix takes this route with it, if any."""
    if parent is None:
        return None
    if parent.findings and _owns(parent, label, whole):
        return parent
    return sites[id(parent)].owner


def _place(
    node: Node, site: _Site | None, kept: list[Route], unlisted: int, sites: dict[int, _Site]
) -> None:
    """Give the node's findings their path (its first free route), `also_at` (the others)
    and what depends on the route."""
    paths = [_route_path(parent, label, sites) for parent, label in kept]
    for finding in node.findings:
        if paths:
            finding.path, finding.also_at = paths[0], paths[1:]
        else:
            finding.path = (
                f"<an object built at offset {finding.offset} and dropped: not in the loaded "
                "value, yet torch refuses it>"
            )
        finding.more_sites = max(unlisted, 0)
        if site is not None and _in_legacy_rng_state(site):
            finding.fix, finding.fix_kind = NUMPY_RNG_FIX.advice, NUMPY_RNG_FIX.kind


def _route_path(parent: Node | None, label: str | int, sites: dict[int, _Site]) -> str:
    """The path of a route: at most _MAX_PATH_PARTS labels are walked, whatever the depth
    (deeper paths keep their first labels, from the walk, and their last)."""
    raw: list[str | int] = [label]
    current = parent
    while current is not None and len(raw) < _MAX_PATH_PARTS - _HEAD:
        step = sites[id(current)]
        raw.append(step.label)
        current = step.parent
    raw.reverse()
    if current is None or parent is None:
        return _render(raw)
    above = sites[id(parent)]
    labels = above.depth + 2  # the route's labels, "root" included
    hidden = labels - len(raw) - _HEAD
    middle = f"...({hidden} levels)..." if hidden > 0 else ""
    return _render(above.head[: labels - len(raw)]) + middle + _render(raw)


def _render(raw: Sequence[str | int]) -> str:
    """Labels as a path; a BUILD state's entries read as attributes (`STATE_LABEL`)."""
    if STATE_LABEL not in raw:  # most paths: labels as they are, list and tuple indices boxed
        return "".join(f"[{label}]" if isinstance(label, int) else label for label in raw)
    labels: list[str] = []
    for i, label in enumerate(raw):
        if label == STATE_LABEL:
            if i == len(raw) - 1:
                labels.append(".__dict__")
        elif i and raw[i - 1] == STATE_LABEL:
            labels.append(attribute_label(label))
        else:
            labels.append(f"[{label}]" if isinstance(label, int) else label)
    return "".join(labels)


def _refine_fix(finding: Finding, node: Node) -> None:
    """A name alone says little about an unknown class; how the pickle built it says more."""
    if not finding.fix_kind:
        finding.fix_kind = fix_for_name(finding.global_name or "").kind
    if finding.kind != "unsupported-global" or finding.fix_kind != GENERIC_KIND:
        return
    labels = {label for label, _child in node.children}
    for label, child in node.children:  # a BUILD state, linked: its entries are attributes
        if label == STATE_LABEL:
            labels |= {attribute_label(entry) for entry, _value in child.children}
    fix: Fix | None
    if node.shape == "object-state" and labels >= MODULE_STATE:
        fix, hint = MODULE_FIX, "an nn.Module"
    else:
        fix, hint = _SHAPE_FIXES.get(node.shape, (None, ""))
    if fix is None:
        return
    name = finding.global_name or ""
    finding.fix, finding.fix_kind = f"{fix.advice} ({hint})", fix.kind
    if fix is ENUM_FIX and kind_of(name) != "class":  # a function called with a string
        finding.fix = (
            f"{name} is called with one value, as an Enum class is, or a function: if it is "
            f"your Enum, {fix.advice}; the auditor cannot tell which, so it never offers it "
            "for allow-listing"
        )


def _in_legacy_rng_state(site: _Site) -> bool:
    """Is this the key array of np.random.get_state()'s ('MT19937', keys, pos, ...)?"""
    parent = site.parent
    items = parent.items if parent is not None else None
    return bool(items) and site.label == 1 and value_is(items[0], "MT19937")  # type: ignore[index]


def _foldable(finding: Finding) -> bool:
    return finding.kind in _FOLDABLE and not runs_code(finding.global_name or "")


def _deepest_first(inner_of: dict[int, list[Node]], by_id: dict[int, Node]) -> list[Node]:
    """Owners in an order where every owner comes after the owners it holds (iterative
    post-order: a hostile nesting is deep, and a state may hold its own object)."""
    order: list[Node] = []
    done: set[int] = set()
    for start in inner_of:
        stack: list[tuple[int, bool]] = [(start, False)]
        while stack:
            key, expanded = stack.pop()
            if expanded:
                order.append(by_id[key])
                continue
            if key in done:
                continue
            done.add(key)
            stack.append((key, True))
            stack += [(id(n), False) for n in inner_of.get(key, ()) if id(n) in by_id]
    return [owner for owner in order if owner.findings]


def _fold(outer: Finding, inner: list[Finding]) -> None:
    """`outer`'s fix replaces the object, so what it holds needs no fix of its own; the
    names are said on it and count for its allowlist (`needs`)."""
    names = sorted({f.global_name for f in inner if f.global_name}) or ["objects torch refuses"]
    outer.detail += f" (holding {', '.join(names)})"
    if outer.needs:
        extra = [n for f in inner for n in f.needs]
        joined = dict.fromkeys((*outer.needs, *extra))
        outer.needs = tuple(joined) if all(f.needs for f in inner) else ()
