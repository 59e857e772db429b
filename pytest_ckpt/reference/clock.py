"""Injectable clocks. Anything that stamps time takes a `Clock`, so tests and resume are exact."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pytest_ckpt.reference.fields import read_fields

Clock = Callable[[], float]
CLOCK_SCHEMA_VERSION = 1


def wall_clock() -> float:
    """Seconds since the epoch; the default for interactive use, never for tests."""
    return time.time()


class ManualClock:
    """A deterministic clock: each reading returns the current time, then advances by `tick`.

    Its position is checkpointable (`state_dict`/`load_state_dict`), so a resumed run stamps the
    same times as the run that never stopped.
    """

    def __init__(self, start: float = 1_700_000_000.0, tick: float = 1.0) -> None:
        self.now = float(start)
        self.tick = float(tick)

    def __call__(self) -> float:
        current = self.now
        self.now += self.tick
        return current

    def state_dict(self) -> dict[str, Any]:
        return {"schema_version": CLOCK_SCHEMA_VERSION, "now": self.now, "tick": self.tick}

    def load_state_dict(self, state: Any) -> None:
        fields = read_fields(
            state, {"now": float, "tick": float}, where="ManualClock", version=CLOCK_SCHEMA_VERSION
        )
        self.now, self.tick = fields["now"], fields["tick"]
