"""What the static converter's machine builds where a value is not yet what is written.

`ConcreteMachine` (`migrate.static`) pushes real values where it can (strings, numbers,
tensors, the results of torch's allow-listed calls) and, for what the rules of
`migrate.rules` convert or what must be refused, the markers below; `convert_call` says
which a call of a global becomes. `migrate.finish` then replaces every marker by what is
written (--trust builds the same markers from live objects: `migrate.trusted`).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from pytest_ckpt.audit.global_kinds import describe_global
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
class TzInfo:
    """A `datetime.timezone`: read into the datetime that carries it, refused alone."""

    tz: datetime.tzinfo


@dataclass(slots=True, eq=False)
class ObjectRecord:
    """An object built as its class plus a dict of attributes. `refused` is set when the
    pickle then treats it as something else (APPENDS, SETITEMS: a list or dict subclass)."""

    cls: str
    state: dict[str, Any] = field(default_factory=dict)
    refused: str | None = None


class DequeList(list):
    """A deque being filled by APPENDS; becomes a plain list."""


class SetList(list):
    """A set/frozenset being filled; becomes a plain list."""


class DefaultDict(dict):
    """A defaultdict being filled by SETITEMS; becomes a plain dict."""


def convert_call(name: str, args: tuple) -> Any:
    """What a call of the global `name` (not in torch's allowlist) becomes: a marker, a
    `Refused` saying why not, or None when no rule knows it."""
    rule = rules.rule_for_global(name)
    if rule in (rules.DATETIME, rules.DATE, rules.TIME) and args:
        state = args[0]
        if isinstance(state, str):
            state = state.encode("latin-1")
        tz = args[1] if len(args) > 1 else None
        if isinstance(state, bytes) and len(args) <= 2 and (tz is None or isinstance(tz, TzInfo)):
            try:
                value = _decode_datetime(name, state, tz.tz if tz is not None else None)
            except (IndexError, ValueError) as err:
                return Refused(f"{name} with a state it cannot be built from ({err})")
            return Converted(rule.convert(value), rule.note(name))
        return None
    if rule is rules.TIMEDELTA and 0 < len(args) <= 3 and all(type(a) is int for a in args):
        try:
            return Converted(datetime.timedelta(*args), rule.note(name))  # seconds once finished
        except OverflowError as err:
            return Refused(f"{name} out of range ({err})")
    if name == "datetime.timezone":
        return _timezone(args)
    if rule is rules.DEQUE and args and type(args[0]) in (list, tuple):
        return DequeList(args[0])
    if rule is rules.DEFAULTDICT and len(args) <= 1:
        return DefaultDict()
    if rule in (rules.FROZENSET, rules.SET) and len(args) <= 1:
        items = args[0] if args else []
        return SetList(items) if type(items) in (list, tuple) else None
    if rule is rules.PATH and args and all(type(a) is str for a in args):
        return Converted(rule.convert("/".join(args).replace("//", "/")), rule.note(name))
    if rule is rules.OBJECT:
        if len(args) == 3 and isinstance(args[0], GlobalRef) and args[2] is None:
            base = args[1]
            if isinstance(base, GlobalRef) and base.name == "builtins.object":
                return new_object(args[0].name)
        return None
    if len(args) == 1 and type(args[0]) in (int, float, str, bool, type(None), bytes):
        return enum_member(name, args[0])
    return None


def new_object(cls: str) -> ObjectRecord | Refused:
    """An object of class `cls` about to get its state, or why it is not converted."""
    reason = rules.object_refusal(cls)
    return ObjectRecord(cls) if reason is None else Refused(reason)


def enum_member(name: str, value: Any) -> EnumValue | Refused:
    """`name(value)` with one primitive: an Enum member only if `name` is an Enum class with
    a member of that value (`audit.global_kinds`, the auditor's own answer); a function call
    is code, never a member."""
    found = describe_global(name)
    if found.enum:
        if found.values is None or any(type(v) is type(value) and v == value for v in found.values):
            return EnumValue(name, value)
        return Refused(f"{name} has no member with value {value!r}; fix: store .value")
    if found.kind == "function":
        return Refused(
            f"{name} is a function: a call of it is code, not an Enum member; refusing to "
            f"convert; fix: never load this file with weights_only=False"
        )
    if found.kind != "unknown":  # a class that is not an Enum; a code-running name
        return Refused(rules.refuse_call(name))
    return Refused(
        f"cannot tell whether {name} is an Enum class without importing it; fix: run "
        f"migrate where its module can be found (or name its folder with --path DIR), or "
        f"--trust if you wrote the file"
    )


def _timezone(args: tuple) -> TzInfo | Refused | None:
    if not args or len(args) > 2 or not isinstance(args[0], Converted):
        return None
    offset = args[0].value
    names = args[1:]
    if not isinstance(offset, datetime.timedelta) or not all(type(n) is str for n in names):
        return None
    try:
        return TzInfo(datetime.timezone(offset, *names))
    except ValueError as err:
        return Refused(f"datetime.timezone out of range ({err})")


def _decode_datetime(name: str, state: bytes, tzinfo: Any) -> Any:
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
