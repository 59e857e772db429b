"""The conversion table: one rule per kind of object migration rewrites, each carrying its
behaviour in both modes and in the final pass they share.

A rule names the globals whose call builds its kind and the auditor's advice for the kind
(`audit.advice`: migration does what the auditor tells the user to do, and a test checks
that the auditor gives that `Fix` for the rule's globals and live types). Its `static`
behaviour turns a call of one of those globals, as the static machine reads it
(`migrate.static`), into a marker of `migrate.markers`; its `trusted` behaviour turns a live
object (`--trust`, `migrate.trusted`) into the same marker; its `finish` behaviour writes the
marker out in the final pass (`migrate.finish`). Each of the three is a loop over `RULES`.

    Enum member            -> its value
    dataclass / object     -> dict of its state
    datetime / date / time -> ISO string;  timedelta -> seconds
    deque -> list;  set, frozenset -> list (sorted if of one sortable type);  defaultdict -> dict
    pathlib path           -> str
    nn.Module              -> {"class", "config", "state_dict", "modules"}

What no rule converts faithfully is refused, in both modes, with the same line
(`migrate.objects`).
"""

from __future__ import annotations

import collections
import datetime
import enum
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_ckpt.audit.advice import ENUM_FIX, MODULE_FIX, OBJECT_STATE_FIX, Fix, fix_for_name
from pytest_ckpt.migrate import objects
from pytest_ckpt.migrate.markers import (
    Converted,
    DefaultDict,
    DequeList,
    EnumValue,
    GlobalRef,
    ObjectRecord,
    Refused,
    SetList,
    TzInfo,
)


class Finisher(Protocol):
    """What a rule's final pass uses of `migrate.finish.Finisher` (the one final pass)."""

    def convert(self, path: Any, what: str) -> None: ...
    def remember(self, node: Any, result: Any) -> Any: ...
    def child(self, value: Any, path: Any, target: Any, key: Any) -> None: ...
    def as_list(self, node: Any, items: list[Any], path: Any) -> list[Any]: ...
    def as_set(self, node: Any, items: list[Any], path: Any) -> list[Any]: ...
    def as_dict(self, node: Any, items: dict, shell: dict, path: Any) -> Any: ...
    def as_module(self, node: Any, record: ObjectRecord, path: Any) -> dict[str, Any]: ...


PRIMITIVES = (int, float, str, bool, type(None))  # what a config keeps; an Enum's value
_ENUM_VALUES = (*PRIMITIVES, bytes)  # what an Enum member may be pickled with


@dataclass(slots=True, frozen=True)
class Rule:
    """One kind: the globals that build it, the advice it carries out, and its behaviour.

    `static(rule, name, args)`: the marker a call of one of its globals becomes (None: not a
    call this rule converts, so it is refused). `trusted(rule, value)`: the marker for a live
    value, None when the value is not of this kind. `finish(rule, finisher, node, marker,
    path)`: what the final pass writes for a marker `finishes` accepts. Each is None where a
    rule has no such step (a set is a container the final pass knows; a module is an object
    until the final pass sees its state).
    """

    kind: str
    fix: Fix | None  # None: torch loads it (a set); migration writes a list all the same
    becomes: str
    globals: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    static: Callable[[Rule, str, tuple], Any] | None = None
    trusted: Callable[[Rule, Any], Any] | None = None
    finishes: Callable[[Any], bool] = lambda marker: False
    finish: Callable[[Rule, Finisher, Any, Any, Any], Any] | None = None

    def builds(self, name: str) -> bool:
        """Does a call of the global `name` build this kind?"""
        return name in self.globals or name.startswith(self.prefixes)

    def note(self, subject: str | None) -> str:
        """The report of one conversion: `datetime.date -> ISO string`."""
        return self.becomes if subject is None else f"{subject} {self.becomes}"


# ---- static: a call of a global, as the static machine reads it ----------------------------


def _enum_call(rule: Rule, name: str, args: tuple) -> Any:
    if len(args) == 1 and type(args[0]) in _ENUM_VALUES:
        return objects.enum_member(name, args[0])
    return None


def _datetime_call(rule: Rule, name: str, args: tuple) -> Any:
    """`datetime.datetime(state_bytes[, tz])` and its date and time twins."""
    if not args:
        return None
    state = args[0].encode("latin-1") if isinstance(args[0], str) else args[0]
    tz = args[1] if len(args) > 1 else None
    if not isinstance(state, bytes) or len(args) > 2 or not (tz is None or isinstance(tz, TzInfo)):
        return None
    try:
        value = _decode_datetime(name, state, tz.tz if tz is not None else None)
    except (IndexError, ValueError) as err:
        return Refused(f"{name} with a state it cannot be built from ({err})")
    return Converted(value.isoformat(), rule.note(name))


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


def _timedelta_call(rule: Rule, name: str, args: tuple) -> Any:
    if not (0 < len(args) <= 3 and all(type(a) is int for a in args)):
        return None
    try:
        return Converted(datetime.timedelta(*args), rule.note(name))  # seconds once finished
    except OverflowError as err:
        return Refused(f"{name} out of range ({err})")


def timezone_call(args: tuple) -> TzInfo | Refused | None:
    """`datetime.timezone(offset[, name])`: not a rule's kind but a part of a datetime's."""
    if not args or len(args) > 2 or not isinstance(args[0], Converted):
        return None
    offset, names = args[0].value, args[1:]
    if not isinstance(offset, datetime.timedelta) or not all(type(n) is str for n in names):
        return None
    try:
        return TzInfo(datetime.timezone(offset, *names))
    except ValueError as err:
        return Refused(f"datetime.timezone out of range ({err})")


def _path_call(rule: Rule, name: str, args: tuple) -> Any:
    if args and all(type(a) is str for a in args):
        return Converted("/".join(args).replace("//", "/"), rule.note(name))
    return None


def _deque_call(rule: Rule, name: str, args: tuple) -> Any:
    return DequeList(args[0]) if args and type(args[0]) in (list, tuple) else None


def _set_call(rule: Rule, name: str, args: tuple) -> Any:
    items = args[0] if args else []
    return SetList(items) if len(args) <= 1 and type(items) in (list, tuple) else None


def _defaultdict_call(rule: Rule, name: str, args: tuple) -> Any:
    return DefaultDict() if len(args) <= 1 else None


def _reconstructor_call(rule: Rule, name: str, args: tuple) -> Any:
    """`copyreg._reconstructor(cls, object, None)`: protocol 0/1's way to build an object."""
    if len(args) == 3 and isinstance(args[0], GlobalRef) and args[2] is None:
        base = args[1]
        if isinstance(base, GlobalRef) and base.name == "builtins.object":
            return objects.new_object(args[0].name)
    return None


# ---- trusted: a live object --------------------------------------------------------------


def _live_enum(rule: Rule, value: Any) -> Any:
    if not isinstance(value, enum.Enum):
        return None
    name = objects.qualified_name(type(value))
    if type(value.value) not in _ENUM_VALUES:
        return Refused(objects.refuse_call(name))  # pickled with a value it cannot convert
    return EnumValue(name, value.value)


def _live_exactly(cls: type, convert: Callable[[Any], Any]) -> Callable[[Rule, Any], Any]:
    """A live value of exactly `cls` (a subclass pickles differently): Converted."""

    def trusted(rule: Rule, value: Any) -> Any:
        if type(value) is not cls:
            return None
        return Converted(convert(value), rule.note(objects.qualified_name(cls)))

    return trusted


def _live_path(rule: Rule, value: Any) -> Any:
    if not isinstance(value, pathlib.PurePath):
        return None
    return Converted(str(value), rule.note(objects.qualified_name(type(value))))


def _live_container(cls: type, marker: type) -> Callable[[Rule, Any], Any]:
    return lambda rule, value: marker(value) if type(value) is cls else None


def _live_object(rule: Rule, value: Any) -> Any:
    """An object pickle writes as its class and a dict of attributes (`default_state`)."""
    state = objects.default_state(value)
    if state is None:
        return None
    made = objects.new_object(objects.qualified_name(type(value)))
    if isinstance(made, ObjectRecord):
        made.state.update(state)
    return made


# ---- final pass: a marker written out ----------------------------------------------------


def _write_enum(rule: Rule, finisher: Finisher, node: Any, marker: EnumValue, path: Any) -> Any:
    finisher.convert(path, f"{rule.note(marker.cls)} {marker.value!r}")
    return finisher.remember(node, marker.value)


def _write_seconds(rule: Rule, finisher: Finisher, node: Any, marker: Converted, path: Any) -> Any:
    finisher.convert(path, marker.what)
    return finisher.remember(node, marker.value.total_seconds())


def _write_module(rule: Rule, finisher: Finisher, node: Any, marker: Any, path: Any) -> Any:
    finisher.convert(path, rule.note(marker.cls))
    return finisher.as_module(node, marker, path)


def _write_object(rule: Rule, finisher: Finisher, node: Any, marker: Any, path: Any) -> Any:
    finisher.convert(path, rule.note(marker.cls))
    shell = finisher.remember(node, {})
    for name, item in reversed(list(marker.state.items())):
        suffix = f".{name}" if type(name) is str else f"[{name!r}]"
        finisher.child(item, (path, suffix), shell, name)
    return shell


def _write_list(rule: Rule, finisher: Finisher, node: Any, marker: Any, path: Any) -> Any:
    finisher.convert(path, rule.note(rule.kind))
    write = finisher.as_set if rule.kind == "set" else finisher.as_list  # a set: sorted
    return write(node, list(marker), path)


def _write_dict(rule: Rule, finisher: Finisher, node: Any, marker: Any, path: Any) -> Any:
    finisher.convert(path, rule.note(rule.kind))
    return finisher.as_dict(node, marker, {}, path)


def _is_module(marker: Any) -> bool:
    return isinstance(marker, ObjectRecord) and marker.state.keys() >= objects.MODULE_STATE


def _for_class(kind: str, cls: type, becomes: str, **more: Any) -> Rule:
    """The rule for one class, pickled under its own name: the auditor's advice for that
    name, recognised by that global."""
    name = objects.qualified_name(cls)
    return Rule(kind, fix_for_name(name), becomes, globals=frozenset({name}), **more)


def _iso(value: Any) -> str:
    return value.isoformat()


ENUM = Rule(
    "Enum",
    ENUM_FIX,
    "member -> its value",
    static=_enum_call,
    trusted=_live_enum,
    finishes=lambda marker: isinstance(marker, EnumValue),
    finish=_write_enum,
)
DATETIME, DATE, TIME = (
    _for_class(kind, cls, "-> ISO string", static=_datetime_call, trusted=_live_exactly(cls, _iso))
    for kind, cls in (
        ("datetime", datetime.datetime), ("date", datetime.date), ("time", datetime.time)
    )
)  # fmt: skip
TIMEDELTA = _for_class(
    "timedelta",
    datetime.timedelta,
    "-> seconds",
    static=_timedelta_call,
    trusted=_live_exactly(datetime.timedelta, lambda value: value),
    finishes=lambda m: isinstance(m, Converted) and isinstance(m.value, datetime.timedelta),
    finish=_write_seconds,
)
PATH = Rule(
    "path",
    fix_for_name("pathlib.Path"),
    "-> str",
    prefixes=("pathlib.",),
    static=_path_call,
    trusted=_live_path,
)
MODULE = Rule(
    "nn.Module",
    MODULE_FIX,
    "module -> state_dict + config",
    finishes=_is_module,
    finish=_write_module,
)
DEQUE = _for_class(
    "deque",
    collections.deque,
    "-> list",
    static=_deque_call,
    trusted=_live_container(collections.deque, DequeList),
    finishes=lambda marker: isinstance(marker, DequeList),
    finish=_write_list,
)
SET = Rule(
    "set",
    None,
    "-> list",
    globals=frozenset({"builtins.set"}),
    static=_set_call,
    finishes=lambda marker: isinstance(marker, SetList) or type(marker) in (set, frozenset),
    finish=_write_list,
)
FROZENSET = _for_class(
    "frozenset",
    frozenset,
    "-> list",
    static=_set_call,
    trusted=_live_container(frozenset, SetList),
)
DEFAULTDICT = Rule(
    "defaultdict",
    fix_for_name("collections.defaultdict"),
    "-> dict",
    globals=frozenset({"collections.defaultdict"}),
    static=_defaultdict_call,
    trusted=_live_container(collections.defaultdict, DefaultDict),
    finishes=lambda marker: isinstance(marker, DefaultDict),
    finish=_write_dict,
)
OBJECT = Rule(
    "object",
    OBJECT_STATE_FIX,
    "object -> dict of its state",
    globals=frozenset({"copyreg._reconstructor"}),
    static=_reconstructor_call,
    trusted=_live_object,
    finishes=lambda marker: isinstance(marker, ObjectRecord),
    finish=_write_object,
)

RULES: tuple[Rule, ...] = (
    ENUM, DATETIME, DATE, TIME, TIMEDELTA, PATH, MODULE, DEQUE, SET, FROZENSET, DEFAULTDICT,
    OBJECT,
)  # fmt: skip


def rule_for_global(name: str) -> Rule | None:
    """The rule for what a call of the global `name` builds, if one has it."""
    return next((rule for rule in RULES if rule.builds(name)), None)


def convert_call(name: str, args: tuple) -> Any:
    """What a call of the global `name` (not in torch's allowlist) becomes: a marker, a
    `Refused` saying why not, or None when no rule converts it. A global no rule names,
    called with one primitive, may be an Enum member (`ENUM`)."""
    if name == "datetime.timezone":
        return timezone_call(args)
    rule = rule_for_global(name) or ENUM
    return rule.static(rule, name, args) if rule.static is not None else None


def live_marker(value: Any) -> Any:
    """The marker the first rule that knows the live `value` makes of it, or None."""
    for rule in RULES:
        if rule.trusted is not None:
            made = rule.trusted(rule, value)
            if made is not None:
                return made
    return None
