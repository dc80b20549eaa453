"""Direct Redis publishing: each call is one round trip (a non-transactional pipeline, no MULTI).

Payloads come from ``sinks.redis.payloads``, names from ``sinks.redis.channels``.
The receive -> publish latency of every batch is observed in
``strikeflow_tick_to_publish_seconds`` against the injected clock.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.records.instruments import InstrumentIndex
from pipeline.records.time_units import SECONDS_PER_DAY
from pipeline.runtime import metrics
from pipeline.runtime.clock import SYSTEM_CLOCK, Clock
from sinks.redis.channels import Channels
from sinks.redis.forward_gate import FORWARD_TICKS_LUA, forward_ticks_call
from sinks.redis.payloads import (
    bar_messages,
    chain_messages,
    vix_messages,
)

SNAPSHOT_TTL_S = 7 * SECONDS_PER_DAY


class RedisPublisher:
    """Publishes ticks (and their snapshot hashes), bars and chain rows; errors propagate to the caller."""

    def __init__(self, redis: Any, prefix: str = "", *, snapshot_ttl_s: int | None = SNAPSHOT_TTL_S,
                 per_instrument: bool = False, clock: Clock = SYSTEM_CLOCK) -> None:
        self.redis = redis
        self.channels = Channels(prefix)
        self.snapshot_ttl_s = snapshot_ttl_s
        self.per_instrument = per_instrument  # also PUBLISH tick:<token> (latest published tick of the batch)
        self.clock = clock

    async def publish_ticks(self, underlying: str, ticks: np.ndarray, index: InstrumentIndex | None) -> int:
        """Publish one batch on ``ticks:<underlying>`` and update the snapshot hashes; returns ticks published
        (those newer than what Redis has of their instrument, see ``sinks.redis.forward_gate``)."""
        return await self.publish_tick_batches([(underlying, ticks, index)])

    async def publish_tick_batches(self, batches: list[tuple[str, np.ndarray, InstrumentIndex | None]]) -> int:
        """Publish several underlyings' batches (one message each, with their snapshot hashes) in one round
        trip, each through the forward-only gate; returns ticks published."""
        batches = [b for b in batches if len(b[1])]
        if not batches:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for underlying, ticks, index in batches:
            keys, args = forward_ticks_call(self.channels, underlying, ticks, index,
                                            ttl_s=self.snapshot_ttl_s, per_instrument=self.per_instrument)
            pipe.eval(FORWARD_TICKS_LUA, len(keys), *keys, *args)
        kept = await pipe.execute()
        now = self.clock.time()
        n = 0
        for (_, ticks, _), published in zip(batches, kept, strict=True):
            n += int(published)
            latency = now - float(ticks["recv_ts"].max()) / 1e6
            if published and latency >= 0:
                metrics.TICK_TO_PUBLISH.observe(latency)
        metrics.REDIS_PUBLISHED.labels("ticks").inc(sum(1 for k in kept if k))
        metrics.REDIS_TICKS_PUBLISHED.inc(n)
        return n

    async def publish_bars(self, underlying: str, bars: np.ndarray, index: InstrumentIndex | None = None) -> int:
        """Publish closed bars, one message per timeframe; returns bars published."""
        if len(bars) == 0:
            return 0
        await self._publish_all("bars", bar_messages(self.channels, underlying, bars, index))
        return len(bars)

    async def publish_chains(self, underlying: str, chain_rows: np.ndarray) -> int:
        """Publish chain rows (CHAIN_BAR_DTYPE; one message each, in order, one round trip) on
        ``chain:<underlying>:<expiry>``; returns rows published."""
        if len(chain_rows) == 0:
            return 0
        return await self._publish_all("chain", chain_messages(self.channels, underlying, chain_rows))

    async def publish_vix(self, underlying: str, vix_rows: np.ndarray) -> int:
        """Publish volatility-index rows (VOL_INDEX_DTYPE; in order, one round trip) on ``vix:<underlying>``."""
        if len(vix_rows) == 0:
            return 0
        return await self._publish_all("vix", vix_messages(self.channels, underlying, vix_rows))

    async def _publish_all(self, kind: str, messages: list[tuple[str, str]]) -> int:
        """PUBLISH each (channel, message) in order, in one round trip; returns how many."""
        pipe = self.redis.pipeline(transaction=False)
        for channel, message in messages:
            pipe.publish(channel, message)
        await pipe.execute()
        metrics.REDIS_PUBLISHED.labels(kind).inc(len(messages))
        return len(messages)
