"""A deterministic clock for a subject's `build`, `step` and `rebuild`, as its modules see it.

Wall-clock values in a state (a `created` timestamp, a history of `(stage, datetime.now())`
pairs, a step duration) make the continued and the resumed run differ, and a snapshot differ
from one run to the next, by time alone. Users froze the clock by patching their module
globals; this does it for them, the way the module imported the clock:

    import time, datetime              -> module.time / module.datetime are replaced by views
                                          of those modules with the clock's functions
    from datetime import datetime      -> module.datetime is a datetime class whose now(),
                                          utcnow() and today() read the clock
    from time import time, monotonic   -> module.time / module.monotonic are the clock's

Nothing outside the named modules changes (the real `time` module is untouched, so torch,
pytest and the standard library keep the real clock). The clock starts at `START` (UTC; naive
`now()` is UTC too, so no machine's timezone leaks in) and stands still unless `tick` seconds
are added per reading: with `tick=0` the continued and the resumed run read the same values
however many times they read it.
"""

from __future__ import annotations

import contextlib
import datetime as _datetime
import importlib
import time as _time
import types
from collections.abc import Iterable, Iterator
from typing import Any

START = _datetime.datetime(2024, 1, 1, tzinfo=_datetime.timezone.utc).timestamp()
MONOTONIC_START = 1000.0  # monotonic() and perf_counter() start here, as after a boot


class DeterministicClock:
    """Readings start at `start` (a POSIX timestamp) and advance `tick` seconds each."""

    def __init__(self, start: float = START, tick: float = 0.0) -> None:
        self.start = float(start)
        self.now = float(start)
        self.tick = float(tick)

    def read(self) -> float:
        value = self.now
        self.now += self.tick
        return value

    def advance(self, seconds: float) -> None:
        self.now += seconds

    # what the patched names become --------------------------------------------------------

    def time(self) -> float:
        return self.read()

    def time_ns(self) -> int:
        return round(self.read() * 1e9)

    def monotonic(self) -> float:
        return self.read() - self.start + MONOTONIC_START

    def monotonic_ns(self) -> int:
        return round(self.monotonic() * 1e9)

    def time_module(self) -> types.ModuleType:
        """A view of `time` whose clock functions are this clock's."""
        view = types.ModuleType("time")
        view.__dict__.update(vars(_time))
        overrides = {"time": self.time, "time_ns": self.time_ns, "monotonic": self.monotonic}
        overrides |= {"monotonic_ns": self.monotonic_ns, "perf_counter": self.monotonic}
        overrides["perf_counter_ns"] = self.monotonic_ns
        view.__dict__.update(overrides)
        return view

    def datetime_class(self) -> type:
        """A `datetime` subclass whose now(), utcnow() and today() read this clock; real
        datetimes are instances of it, so `isinstance(x, datetime)` keeps working."""
        clock = self

        class _Meta(type):
            def __instancecheck__(cls, obj: Any) -> bool:
                return isinstance(obj, _datetime.datetime)

        class datetime(_datetime.datetime, metaclass=_Meta):  # the name users see
            # now/utcnow/today return real datetimes, not instances of this class (typeshed
            # says Self, hence the ignores): _Meta makes isinstance(x, datetime) hold for them.
            @classmethod
            def now(cls, tz: _datetime.tzinfo | None = None) -> _datetime.datetime:  # type: ignore[override]
                utc = _datetime.datetime.fromtimestamp(clock.read(), _datetime.timezone.utc)
                return utc.replace(tzinfo=None) if tz is None else utc.astimezone(tz)

            @classmethod
            def utcnow(cls) -> _datetime.datetime:  # type: ignore[override]
                return cls.now()

            @classmethod
            def today(cls) -> _datetime.datetime:  # type: ignore[override]
                return cls.now()

        return datetime

    def datetime_module(self) -> types.ModuleType:
        view = types.ModuleType("datetime")
        view.__dict__.update(vars(_datetime))
        view.__dict__["datetime"] = self.datetime_class()
        return view

    def replacement(self, value: Any) -> Any:
        """What a module global bound to `value` becomes, or None to leave it."""
        if value is _time:
            return self.time_module()
        if value is _datetime:
            return self.datetime_module()
        if value is _datetime.datetime:
            return self.datetime_class()
        functions = {
            _time.time: self.time,
            _time.time_ns: self.time_ns,
            _time.monotonic: self.monotonic,
            _time.monotonic_ns: self.monotonic_ns,
            _time.perf_counter: self.monotonic,
            _time.perf_counter_ns: self.monotonic_ns,
        }
        try:
            return functions.get(value)
        except TypeError:  # an unhashable global
            return None


@contextlib.contextmanager
def frozen_clock(
    modules: Iterable[str | types.ModuleType], *, start: float = START, tick: float = 0.0
) -> Iterator[DeterministicClock]:
    """Give `modules` (names or module objects) a `DeterministicClock` until the block ends.

    Raises ValueError naming a module that cannot be imported or that imports no clock (a
    name that does nothing would leave the clock running silently)."""
    clock = DeterministicClock(start, tick)
    planned: list[tuple[types.ModuleType, str, Any]] = []
    for entry in modules:
        module = _module(entry)
        found = [(name, clock.replacement(value)) for name, value in vars(module).items()]
        found = [(name, new) for name, new in found if new is not None]
        if not found:
            raise ValueError(
                f"clock module {module.__name__}: it imports no clock (time, datetime, or "
                "their functions); name the module whose code reads the time"
            )
        planned += [(module, name, new) for name, new in found]
    originals = [(module, name, getattr(module, name)) for module, name, _ in planned]
    try:
        for module, name, new in planned:
            setattr(module, name, new)
        yield clock
    finally:
        for module, name, old in reversed(originals):
            setattr(module, name, old)


def _module(entry: str | types.ModuleType) -> types.ModuleType:
    if isinstance(entry, types.ModuleType):
        return entry
    try:
        return importlib.import_module(entry)
    except ImportError as err:
        raise ValueError(f"clock module {entry!r} cannot be imported: {err}") from None
