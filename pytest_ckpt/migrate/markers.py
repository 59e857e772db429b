"""What the static converter's machine builds where a value is not yet what is written.

`ConcreteMachine` (`migrate.static`) pushes real values where it can (strings, numbers,
tensors, the results of torch's allow-listed calls) and, for what the rules of
`migrate.rules` convert or what must be refused, the markers below (`rules.convert_call`
says which a call of a global becomes). `migrate.finish` then replaces every marker by what
is written (--trust builds the same markers from live objects: `migrate.trusted`).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any


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
