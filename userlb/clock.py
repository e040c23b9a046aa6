"""Clocks.  The core never reads a clock itself: drivers pass `now` (seconds,
float, monotonic) into the engine, and the few control-plane pieces that need
the time (the mhs scheduler's timers) get a Clock object injected."""
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...


class MonotonicClock:
    """The real clock: time.monotonic()."""

    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that only moves when told to (tests, `userlb simulate`)."""

    def __init__(self, t: float = 0.0):
        self.t = float(t)

    def now(self) -> float:
        return self.t

    def set(self, t: float) -> None:
        self.t = float(t)

    def advance(self, dt: float) -> None:
        self.t += dt
