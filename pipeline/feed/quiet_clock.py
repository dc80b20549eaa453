"""The exchange clock of quiet underlyings: what the ingestor sends when no tick says what time it is.

Bars close on the exchange clock, which only ticks carry. After 15:30 IST, or
on an underlying that simply does not trade for a while, the open bars would
wait for the next tick (the next morning). While the feed is alive (messages,
heartbeats included, arrive), an underlying with no tick for ``quiet_s``
wall seconds gets a clock record: the newest exchange time seen on any
connection plus the wall seconds since it was seen. That estimate runs at
wall speed, so with a sped-up simulator bars close later than they could,
never earlier; and it is on the ticks topic, so a replay sees it too.

Pure: wall time is passed in (monotonic seconds).
"""

from __future__ import annotations

from collections.abc import Iterable


class QuietClock:
    def __init__(self, quiet_s: float) -> None:
        self.quiet_s = quiet_s
        self._last_tick: dict[str, float] = {}  # underlying -> wall time of its last produced batch
        self._sent: dict[str, int] = {}  # underlying -> newest exchange time sent for it
        self._newest_exchange_ts = 0
        self._newest_at: float | None = None

    def ticked(self, underlyings: Iterable[str], exchange_ts: int, now: float) -> None:
        """A frame produced batches for ``underlyings``; ``exchange_ts`` its newest exchange time."""
        for underlying in underlyings:
            self._last_tick[underlying] = now
        if exchange_ts > self._newest_exchange_ts:
            self._newest_exchange_ts, self._newest_at = int(exchange_ts), now

    def due(self, now: float, feed_alive: bool) -> list[tuple[str, int]]:
        """``(underlying, exchange_ts)`` of every clock record to send now (each moves that clock forward)."""
        if not feed_alive or self._newest_at is None:
            return []
        estimate = self._newest_exchange_ts + int(now - self._newest_at)
        out = []
        for underlying, last in self._last_tick.items():
            if now - last >= self.quiet_s and estimate > self._sent.get(underlying, self._newest_exchange_ts):
                self._sent[underlying] = estimate
                out.append((underlying, estimate))
        return out
