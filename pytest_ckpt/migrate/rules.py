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
    nn.Module              -> {"class", "config", "state_dict"}
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import pathlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_ckpt.audit.advice import (
    ENUM_FIX,
    MODULE_FIX,
    OBJECT_STATE_FIX,
    Fix,
    fix_for_name,
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


def _is_dict_subclass(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and type(value) is not dict
        and not isinstance(value, collections.OrderedDict)
    )


def _is_object(value: Any) -> bool:
    return dataclasses.is_dataclass(value) or hasattr(value, "__reduce_ex__")


def _live_module(module: Any) -> dict[str, Any]:
    cls = type(module)
    return module_record(
        f"{cls.__module__}.{cls.__qualname__}",
        module,
        state_of=vars,
        is_module=lambda child: child is not None,
        leaf=lambda tensor, name: tensor,
    )


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
    convert=_live_module,
    subject=lambda value: None,
)
DEQUE = _for_class("deque", collections.deque, "-> list")
SET = Rule("set", None, "-> list", globals=frozenset({"builtins.set"}), live=_instance_of(set))
FROZENSET = _for_class("frozenset", frozenset, "-> list")
# --trust writes every dict subclass but OrderedDict (which torch loads) as a plain dict.
DEFAULTDICT = Rule(
    "defaultdict",
    fix_for_name("collections.defaultdict"),
    "-> dict",
    globals=frozenset({"collections.defaultdict"}),
    live=_is_dict_subclass,
)
OBJECT = Rule(
    "object",
    OBJECT_STATE_FIX,
    "object -> dict of its state",
    globals=frozenset({"copyreg._reconstructor"}),
    live=_is_object,
    subject=lambda value: type(value).__qualname__,
)

RULES: tuple[Rule, ...] = (
    ENUM, DATETIME, DATE, TIME, TIMEDELTA, PATH, MODULE, DEQUE, SET, FROZENSET, DEFAULTDICT,
    OBJECT,
)  # fmt: skip


def rule_for_global(name: str) -> Rule | None:
    """The rule for what a call of the global `name` builds, if one has it."""
    return next((rule for rule in RULES if rule.builds(name)), None)


def first_live(rules: Iterable[Rule], value: Any) -> Rule | None:
    """The first of `rules` that recognises the live `value`."""
    return next((rule for rule in rules if rule.live(value)), None)


def merged_state(dict_state: Any, slot_state: Any) -> dict[str, Any]:
    """An object's BUILD state, `(dict_state, slot_state)`, as one dict of attributes."""
    return {**(dict_state or {}), **(slot_state or {})}


def module_record(
    cls: str,
    module: Any,
    *,
    state_of: Callable[[Any], Mapping[str, Any]],
    is_module: Callable[[Any], bool],
    leaf: Callable[[Any, str], Any],
) -> dict[str, Any]:
    """An nn.Module as `{"class", "config", "state_dict"}`: its tensors by dotted name and the
    primitive public attributes, from its state (`state_of(module)`: the attributes pickle
    saves, whichever mode reads them). `leaf(tensor, dotted_name)` is what is written."""
    tensors: dict[str, Any] = {}

    def collect(current: Any, prefix: str) -> None:
        state = state_of(current)
        for group in ("_parameters", "_buffers"):
            for name, tensor in (state.get(group) or {}).items():
                if tensor is not None:
                    tensors[prefix + name] = leaf(tensor, prefix + name)
        for name, child in (state.get("_modules") or {}).items():
            if is_module(child):
                collect(child, f"{prefix}{name}.")

    collect(module, "")
    config = {
        key: value
        for key, value in state_of(module).items()
        if not key.startswith("_") and isinstance(value, PRIMITIVES)
    }
    return {"class": cls, "config": config, "state_dict": tensors}
