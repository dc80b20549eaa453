"""Injectable clocks, for the code whose behaviour depends on "now".

The pure core never reads a clock (time comes with the ticks). Code outside it
whose decisions depend on "now" (simulator fault windows, the Redis publisher's
freshness rule) takes a :class:`Clock` (or a callable), so tests pass a
:class:`ManualClock` and move it instead of sleeping. Code that only measures
(durations, lag gauges, log stamps) reads ``time`` directly: nothing a test
asserts depends on it.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock epoch seconds."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for durations and deadlines)."""
        ...


class SystemClock:
    """The real clocks (``time.time``, ``time.monotonic``)."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to (tests): both readings advance together."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self._now = float(now)

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now += seconds


SYSTEM_CLOCK = SystemClock()
