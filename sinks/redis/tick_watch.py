"""An independent Redis subscriber that measures the live path as a dashboard sees it.

``TickWatch`` pattern-subscribes ``ticks:*`` and ``bars:*`` (under a prefix)
and, per tick received, takes ``now - recv_ts`` on the host clock: the
receive -> Redis latency a dashboard on this host experiences (the worker's own
``strikeflow_tick_to_publish_seconds`` is its self-report; this is the outside
view). It also records when each ``ticks:`` channel last carried a *fresh*
tick (received less than ``fresh_s`` before), every tick that is not newer
than one already seen of its instrument (a channel going back in time), and
the key ``(interval_s, token, bucket)`` of every bar published, so a caller
can check that each of them reached the database.

Latencies are kept (float32 milliseconds) only while ``measuring`` is set.
"""

from __future__ import annotations

import array
import asyncio
import time
from collections.abc import Callable

import numpy as np
import orjson
import redis.asyncio as aioredis

from pipeline.runtime.percentiles import percentiles_ms


class TickWatch:
    """Counts and latencies of what Redis delivers; :meth:`run` until ``stop`` is set."""

    def __init__(self, redis_url: str, prefix: str = "", *, fresh_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.fresh_s = fresh_s
        self.clock = clock
        self.measuring = False
        self.latencies_ms = array.array("f")
        self.ticks = 0  # every tick received, measured or not
        self.messages = 0
        self.backwards = 0  # ticks not newer than one already received of their instrument
        self.repeats = 0  # of those, the same tick again (equal recv_ts)
        self.backwards_by_channel: dict[str, int] = {}
        self.backwards_at: list[tuple[float, float]] = []  # (when received, seconds older than the newest seen)
        self.fresh_at: dict[str, list[float]] = {}
        self.bar_keys: set[tuple[int, int, int]] = set()
        self._newest: dict[int, int] = {}
        self.subscribed = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        client = aioredis.from_url(self.redis_url)
        pubsub = client.pubsub()
        await pubsub.psubscribe(f"{self.prefix}ticks:*", f"{self.prefix}bars:*")
        self.subscribed.set()
        try:
            while not stop.is_set():
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if msg and msg["type"] == "pmessage":
                    self.on_message(msg["channel"].decode(), msg["data"], self.clock())
        finally:
            await pubsub.aclose()
            await client.aclose()

    def on_message(self, channel: str, data: bytes, now: float) -> None:
        """One published message received at ``now`` (epoch seconds)."""
        self.messages += 1
        payload = orjson.loads(data)
        if channel.startswith(f"{self.prefix}bars:"):
            interval = int(payload["interval_s"])
            self.bar_keys.update((interval, int(b["token"]), int(b["bucket"])) for b in payload["bars"])
            return
        ticks = payload["ticks"]
        recv = np.fromiter((t["recv_ts"] for t in ticks), np.int64, len(ticks))
        tokens = [t["token"] for t in ticks]
        self.ticks += len(ticks)
        age_s = now - recv / 1e6
        if self.measuring:
            self.latencies_ms.extend((age_s * 1000.0).astype(np.float32).tolist())
        if len(age_s) and age_s.min() < self.fresh_s:
            self.fresh_at.setdefault(channel, []).append(now)
        newest = self._newest
        for token, r in zip(tokens, recv.tolist(), strict=True):
            seen = newest.get(token, -1)
            if r <= seen:
                self.backwards += 1
                self.repeats += r == seen
                self.backwards_by_channel[channel] = self.backwards_by_channel.get(channel, 0) + 1
                if len(self.backwards_at) < 100_000:
                    self.backwards_at.append((now, (seen - r) / 1e6))
            else:
                newest[token] = r

    def latency_summary(self) -> dict[str, float | None]:
        """p50/p95/p99/max of the measured latencies in milliseconds (None when nothing was measured)."""
        return percentiles_ms(np.frombuffer(self.latencies_ms, dtype=np.float32))

    def back_after(self, since: float) -> float | None:
        """Seconds after ``since`` until every channel has had a fresh tick again."""
        firsts = [next((t for t in times if t > since), None) for times in self.fresh_at.values()]
        return None if not firsts or None in firsts else max(firsts) - since

    def longest_gap(self, since: float, until: float) -> dict[str, float]:
        """Per channel, the longest time between fresh ticks within [since, until]."""
        out = {}
        for channel, times in self.fresh_at.items():
            inside = [since] + [t for t in times if since < t < until] + [until]
            out[channel] = max(b - a for a, b in zip(inside, inside[1:], strict=False))
        return out

