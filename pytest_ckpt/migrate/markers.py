"""What the static converter's machine builds, and the final pass that makes it primitives.

`ConcreteMachine` (`migrate.static`) pushes real values where it can (strings, numbers,
tensors, the results of torch's allow-listed calls) and, for what the rules of
`migrate.rules` convert or what must be refused, the markers below; `convert_call` says
which a call of a global becomes. `finish` then replaces every marker by what is written,
reporting each conversion and refusal by its path.
"""

from __future__ import annotations

import collections
import datetime
from dataclasses import dataclass, field
from typing import Any

from pytest_ckpt.migrate import rules


@dataclass(slots=True, eq=False)
class GlobalRef:
    name: str


@dataclass(slots=True, eq=False)
class Refused:
    reason: str


@dataclass(slots=True, eq=False)
class EnumValue:
    cls: str
    value: Any


@dataclass(slots=True, eq=False)
class Converted:
    """A value already converted, with the sentence that reports it."""

    value: Any
    what: str


@dataclass(slots=True, eq=False)
class ObjectRecord:
    cls: str
    state: dict[str, Any] = field(default_factory=dict)


class DequeList(list):
    """A deque being filled by APPENDS; becomes a plain list."""


class SetList(list):
    """A set/frozenset being filled; becomes a plain list."""


class DefaultDict(dict):
    """A defaultdict being filled by SETITEMS; becomes a plain dict."""


def convert_call(name: str, args: tuple) -> Any:
    """What a known constructor call becomes, by the rule for the global it calls, or None
    when we do not know it (a class called with one primitive is taken for an Enum)."""
    rule = rules.rule_for_global(name)
    if rule in (rules.DATETIME, rules.DATE, rules.TIME) and args:
        state = args[0]
        if isinstance(state, str):
            state = state.encode("latin-1")
        if isinstance(state, bytes):
            value = _decode_datetime(name, state, args[1] if len(args) > 1 else None)
            return Converted(rule.convert(value), rule.note(name))
    if rule is rules.TIMEDELTA and all(isinstance(a, int) for a in args):
        return Converted(datetime.timedelta(*args), rule.note(name))  # seconds once finished
    if name == "datetime.timezone" and args and isinstance(args[0], Converted):
        return datetime.timezone(args[0].value)  # a datetime's tzinfo: read, not converted
    if rule is rules.DEQUE and args:
        return DequeList(args[0] if isinstance(args[0], list) else [])
    if rule is rules.DEFAULTDICT:
        return DefaultDict()
    if rule in (rules.FROZENSET, rules.SET) and len(args) <= 1:
        return SetList(args[0] if args else [])
    if rule is rules.PATH and all(isinstance(a, str) for a in args):
        return Converted(rule.convert("/".join(args).replace("//", "/")), rule.note(name))
    if rule is rules.OBJECT and args and isinstance(args[0], GlobalRef):
        return ObjectRecord(args[0].name)
    if len(args) == 1 and isinstance(args[0], rules.PRIMITIVES):
        return EnumValue(name, args[0])
    return None


def _decode_datetime(name: str, state: bytes, tz: Any) -> Any:
    tzinfo = tz if isinstance(tz, datetime.tzinfo) else None
    if name == "datetime.date":
        return datetime.date(state[0] * 256 + state[1], state[2], state[3])
    if name == "datetime.time":
        return datetime.time(
            state[0], state[1], state[2], (state[3] << 16) | (state[4] << 8) | state[5], tzinfo
        )
    return datetime.datetime(
        state[0] * 256 + state[1],
        state[2],
        state[3],
        state[4],
        state[5],
        state[6],
        (state[7] << 16) | (state[8] << 8) | state[9],
        tzinfo,
    )


# ---- final pass: markers -> primitives, with paths ----------------------------------------------


def finish(value: Any, path: str, conversions: list[str], refusals: list[str]) -> Any:
    """Replace every marker under `value` by its primitive form, reporting each by path."""
    if isinstance(value, Refused):
        refusals.append(f"{path}: {value.reason}")
        return None
    if isinstance(value, EnumValue):
        conversions.append(f"{path}: {rules.ENUM.note(value.cls)} {value.value!r}")
        return value.value
    if isinstance(value, Converted):
        conversions.append(f"{path}: {value.what}")
        inner = value.value
        if isinstance(inner, datetime.timedelta):
            return rules.TIMEDELTA.convert(inner)
        return finish(inner, path, conversions, refusals) if isinstance(inner, list) else inner
    if isinstance(value, GlobalRef):
        refusals.append(f"{path}: a bare reference to {value.name}")
        return None
    if isinstance(value, ObjectRecord):
        if value.state.keys() >= rules.MODULE_STATE:  # an nn.Module, whatever its class name
            conversions.append(f"{path}: {rules.MODULE.note(value.cls)}")
            return rules.module_record(
                value.cls,
                value,
                state_of=lambda record: record.state,
                is_module=lambda child: isinstance(child, ObjectRecord),
                leaf=lambda tensor, name: finish(tensor, f"{path}.{name}", [], refusals),
            )
        conversions.append(f"{path}: {rules.OBJECT.note(value.cls)}")
        return {k: finish(v, f"{path}.{k}", conversions, refusals) for k, v in value.state.items()}
    if isinstance(value, (DequeList, SetList)):
        rule = rules.DEQUE if isinstance(value, DequeList) else rules.SET
        conversions.append(f"{path}: {rule.note(rule.kind)}")
        return [finish(v, f"{path}[{i}]", conversions, refusals) for i, v in enumerate(value)]
    if isinstance(value, DefaultDict):
        conversions.append(f"{path}: {rules.DEFAULTDICT.note(rules.DEFAULTDICT.kind)}")
        return {k: finish(v, f"{path}[{k!r}]", conversions, refusals) for k, v in value.items()}
    if isinstance(value, set):
        conversions.append(f"{path}: {rules.SET.note(rules.SET.kind)}")
        return [finish(v, f"{path}[{i}]", conversions, refusals) for i, v in enumerate(value)]
    if isinstance(value, collections.OrderedDict):
        result = collections.OrderedDict(
            (k, finish(v, f"{path}[{k!r}]", conversions, refusals)) for k, v in value.items()
        )
        if hasattr(value, "_metadata"):
            result._metadata = value._metadata  # type: ignore[attr-defined]
        return result
    if isinstance(value, dict):
        return {k: finish(v, f"{path}[{k!r}]", conversions, refusals) for k, v in value.items()}
    if isinstance(value, list):
        return [finish(v, f"{path}[{i}]", conversions, refusals) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(finish(v, f"{path}[{i}]", conversions, refusals) for i, v in enumerate(value))
    return value  # primitives and tensors
