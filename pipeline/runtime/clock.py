"""Injectable clocks: the one place the shell reads wall or monotonic time.

The pure core never reads a clock (time comes with the ticks). Code outside it
that needs "now" (simulator fault windows, publisher freshness, lag gauges)
takes a :class:`Clock`; tests pass a :class:`ManualClock` and move it instead
of sleeping.
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
