"""The conversion table: one rule per kind of object migration rewrites, for both modes.

The static mode (`migrate.static`) recognises a kind by the globals its pickle names; the
`--trust` mode (`migrate.trusted`) by the live object. Each rule holds both, what the object
becomes and how that is reported, and the auditor's advice for the kind (`audit.advice`):
migration does what the auditor tells the user to do, so a rule names that `Fix` and a test
checks that the auditor gives it for the rule's globals and live types.

    Enum member            -> its value
    dataclass / object     -> dict of its state
    datetime / date / time -> ISO string;  timedelta -> seconds
    deque, set, frozenset  -> list;  defaultdict -> dict
    pathlib path           -> str
    nn.Module              -> {"class", "config", "state_dict", "modules"}

What no rule converts faithfully is refused, in both modes, with the same line
(`refuse_call`, `object_refusal`): a call of a function, an object built from constructor
arguments (a namedtuple) or from a state that is not a dict of attributes (numpy, a
`__setstate__`), an object whose class the auditor advises more than its state for.
"""

from __future__ import annotations

import collections
import datetime
import enum
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_ckpt.audit.advice import (
    ENUM_FIX,
    MODULE_FIX,
    OBJECT_STATE_FIX,
    Fix,
    fix_for_name,
    is_dangerous,
    is_module_class,
)

PRIMITIVES = (int, float, str, bool, type(None))  # what a config keeps; an Enum's value
MODULE_STATE = frozenset({"_parameters", "_buffers", "_modules"})  # an nn.Module's state has


@dataclass(slots=True, frozen=True)
class Rule:
    """One kind: how each mode recognises it, what it becomes, the advice it carries out.

    `convert` turns a real value of the kind into what is written (None for the kinds each
    mode walks itself: containers, objects and modules, whose parts are converted in turn).
    `subject` is how --trust names a live one in its report (static names the global).
    """

    kind: str
    fix: Fix | None  # None: torch loads it (a set); migration writes a list all the same
    becomes: str
    globals: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    live: Callable[[Any], bool] = lambda value: False
    convert: Callable[[Any], Any] | None = None
    subject: Callable[[Any], str | None] = lambda value: type(value).__name__

    def builds(self, name: str) -> bool:
        """Does a call of the global `name` build this kind?"""
        return name in self.globals or name.startswith(self.prefixes)

    def note(self, subject: str | None) -> str:
        """The report of one conversion: `datetime.date -> ISO string`."""
        return self.becomes if subject is None else f"{subject} {self.becomes}"


def _instance_of(*types: type) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, types)


def _for_class(kind: str, cls: type, becomes: str, **more: Any) -> Rule:
    """The rule for one class, pickled under its own name: the auditor's advice for that
    name, recognised by that global (static) and by isinstance (--trust)."""
    name = f"{cls.__module__}.{cls.__qualname__}"
    return Rule(
        kind, fix_for_name(name), becomes, globals=frozenset({name}), live=_instance_of(cls), **more
    )


def _iso(value: datetime.date | datetime.time) -> str:
    return value.isoformat()


def _seconds(value: datetime.timedelta) -> float:
    return value.total_seconds()


def _is_plain_object(value: Any) -> bool:
    """Would pickle write `value` as its class and a dict of attributes (the default
    `object.__reduce_ex__`, what the static mode reads as NEWOBJ + BUILD)?"""
    return default_state(value) is not None


def default_state(value: Any) -> dict[str, Any] | None:
    """The attributes pickle saves for `value` when it uses the default reduction
    (`copyreg.__newobj__(cls)` and a dict state, no list or dict items); else None."""
    import copyreg

    try:
        reduced = value.__reduce_ex__(2)
    except Exception:  # a class that refuses to be pickled: not convertible
        return None
    if not isinstance(reduced, tuple) or len(reduced) < 2:
        return None
    func, args = reduced[0], reduced[1]
    if func is copyreg.__newobj_ex__:
        if not (isinstance(args, tuple) and len(args) == 3 and not args[1] and not args[2]):
            return None
    elif func is not copyreg.__newobj__ or args != (type(value),):
        return None
    if any(item is not None for item in reduced[3:5]):
        return None
    state = reduced[2] if len(reduced) > 2 else None
    if isinstance(state, tuple) and len(state) == 2:
        dict_state, slot_state = state
        if all(part is None or isinstance(part, dict) for part in state):
            return merged_state(dict_state, slot_state)
        return None
    return dict(state) if isinstance(state, dict) else ({} if state is None else None)


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def refuse_call(name: str) -> str:
    """The refusal of a call of the global `name` no rule converts (both modes)."""
    fix = fix_for_name(name)
    if is_dangerous(name):
        return f"{name} is called when unpickling: refusing to convert; fix: {fix.advice}"
    return f"a call of {name} is not data migrate can convert; fix: {fix.advice}"


def refuse_arguments(cls: str) -> str:
    """The refusal of an object built from constructor arguments (a namedtuple)."""
    return (
        f"{cls} is built from constructor arguments (cls.__new__(cls, *args)), not a dict "
        f"of attributes; fix: store a tuple or a dict (namedtuple: ._asdict())"
    )


def refuse_state(cls: str) -> str:
    return (
        f"{cls} is rebuilt from a state that is not a dict of attributes (its own "
        f"__reduce__ or __setstate__); fix: {fix_for_name(cls).advice}"
    )


def object_refusal(cls: str) -> str | None:
    """Why an object of class `cls` is not converted to the dict of its state, or None: the
    auditor advises more than its state for it (numpy, OmegaConf, an optimizer, ...)."""
    fix = fix_for_name(cls)
    if fix.allowlist_helps or fix is MODULE_FIX:
        return None
    return f"{cls} object: its state is not its data ({fix.kind}); fix: {fix.advice}"


def module_internals() -> frozenset[str]:
    """The attributes every nn.Module has (from the installed torch): not its config."""
    import torch

    return frozenset(vars(torch.nn.Module())) - {"training"}


ENUM = Rule(
    "Enum", ENUM_FIX, "member -> its value", live=_instance_of(enum.Enum), convert=lambda m: m.value
)
DATETIME = _for_class("datetime", datetime.datetime, "-> ISO string", convert=_iso)
DATE = _for_class("date", datetime.date, "-> ISO string", convert=_iso)
TIME = _for_class("time", datetime.time, "-> ISO string", convert=_iso)
TIMEDELTA = _for_class(
    "timedelta",
    datetime.timedelta,
    "-> seconds",
    convert=_seconds,
    subject=lambda value: "timedelta",
)
PATH = Rule(
    "path",
    fix_for_name("pathlib.Path"),
    "-> str",
    prefixes=("pathlib.",),
    live=_instance_of(pathlib.PurePath),
    convert=str,
    subject=lambda value: "path",
)
MODULE = Rule(
    "nn.Module",
    MODULE_FIX,
    "module -> state_dict + config",
    live=lambda value: is_module_class(type(value)),
    subject=lambda value: None,
)
DEQUE = _for_class("deque", collections.deque, "-> list")
SET = Rule("set", None, "-> list", globals=frozenset({"builtins.set"}), live=_instance_of(set))
FROZENSET = _for_class("frozenset", frozenset, "-> list")
DEFAULTDICT = Rule(
    "defaultdict",
    fix_for_name("collections.defaultdict"),
    "-> dict",
    globals=frozenset({"collections.defaultdict"}),
    live=_instance_of(collections.defaultdict),
)
OBJECT = Rule(
    "object",
    OBJECT_STATE_FIX,
    "object -> dict of its state",
    globals=frozenset({"copyreg._reconstructor"}),
    live=_is_plain_object,
    subject=lambda value: type(value).__qualname__,
)

RULES: tuple[Rule, ...] = (
    ENUM, DATETIME, DATE, TIME, TIMEDELTA, PATH, MODULE, DEQUE, SET, FROZENSET, DEFAULTDICT,
    OBJECT,
)  # fmt: skip


def rule_for_global(name: str) -> Rule | None:
    """The rule for what a call of the global `name` builds, if one has it."""
    return next((rule for rule in RULES if rule.builds(name)), None)


def merged_state(dict_state: Any, slot_state: Any) -> dict[str, Any]:
    """An object's BUILD state, `(dict_state, slot_state)`, as one dict of attributes."""
    return {**(dict_state or {}), **(slot_state or {})}
