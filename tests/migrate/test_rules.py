"""One conversion table for both migration modes, tied to the auditor's advice: a rule names
the Fix the auditor gives for its kind, and both modes convert every kind through it."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import pathlib
import re

import pytest
import torch

from pytest_ckpt.audit import audit_file
from pytest_ckpt.audit.advice import fix_for_name, fix_for_type
from pytest_ckpt.audit.allowlist import load_allowlist
from pytest_ckpt.migrate import rules
from pytest_ckpt.migrate.static import convert_file
from pytest_ckpt.migrate.trusted import to_primitives


class Stage(enum.Enum):
    BLENDING = 3


@dataclasses.dataclass
class Record:
    alpha: float


WHEN = datetime.datetime(2026, 3, 1, 12, 30, tzinfo=datetime.timezone.utc)
EXAMPLES = {
    rules.ENUM: Stage.BLENDING,
    rules.OBJECT: Record(0.5),
    rules.DATETIME: WHEN,
    rules.DATE: WHEN.date(),
    rules.TIME: datetime.time(1, 2, 3),
    rules.TIMEDELTA: datetime.timedelta(seconds=90),
    rules.PATH: pathlib.PurePosixPath("/runs/a"),
    rules.MODULE: torch.nn.Linear(2, 1),
    rules.DEQUE: collections.deque([1, 2], maxlen=5),
    rules.SET: {4},
    rules.FROZENSET: frozenset({5}),
    rules.DEFAULTDICT: collections.defaultdict(list, a=[1]),
}


def test_every_rule_has_an_example() -> None:
    assert set(EXAMPLES) == set(rules.RULES)


@pytest.mark.parametrize("rule", rules.RULES, ids=lambda r: r.kind)
def test_a_rule_names_the_fix_the_auditor_gives_for_its_globals(rule) -> None:
    names = sorted(rule.globals - {"copyreg._reconstructor"})  # see the object test below
    names += [f"{prefix}PosixPath" for prefix in rule.prefixes]
    for name in names:
        if rule.fix is None:  # torch loads it: nothing to advise
            assert name in load_allowlist().names
        else:
            assert fix_for_name(name) is rule.fix


@pytest.mark.parametrize("rule", rules.RULES, ids=lambda r: r.kind)
def test_a_rule_recognises_its_live_objects_and_the_plugin_gives_its_fix(rule) -> None:
    example = EXAMPLES[rule]
    conversions: list[str] = []
    to_primitives(example, "root", conversions)  # --trust: the rules' live behaviour
    assert conversions[0].startswith("root: ") and rule.becomes in conversions[0]
    if rule.fix is not None and rule not in (rules.OBJECT,):  # a dataclass: its own wording
        assert fix_for_type(type(example)) is rule.fix


@pytest.mark.parametrize("rule", [rules.ENUM, rules.OBJECT], ids=lambda r: r.kind)
def test_the_auditor_advises_what_the_rule_does_for_unknown_classes(rule, tmp_path) -> None:
    """An unknown class is told apart by how the pickle builds it: called with one primitive
    (an Enum member) or built from a state (an object)."""
    path = tmp_path / "one.pt"
    torch.save({"x": EXAMPLES[rule]}, path)
    (finding,) = audit_file(path).findings
    assert finding.path == "root['x']" and finding.fix.startswith(rule.fix.advice)


def test_both_modes_convert_every_kind_through_its_rule(tmp_path) -> None:
    path = tmp_path / "all.pt"
    state = {rule.kind: example for rule, example in EXAMPLES.items()}
    torch.save(state, path)
    static = convert_file(path).conversions
    trusted: list[str] = []
    to_primitives(torch.load(path, weights_only=False), "root", trusted)  # our own file
    for conversions in (static, trusted):
        for rule in rules.RULES:
            key = re.escape(f"root[{rule.kind!r}]: ")
            assert any(
                re.match(key + r".*" + re.escape(rule.becomes), line) for line in conversions
            ), (rule.kind, conversions)
