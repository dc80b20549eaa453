"""The process agent's one output: an engine's results to Kafka, to the Redis front and to the metrics.

The emitter owns where results go, so the agent only hands it :class:`~pipeline.core.outputs.EngineOutputs`:
- Redis (the conflating front, ``sinks.redis.conflation``; never awaited per tick, so a slow dashboard
  cannot slow the live path): live ticks, closed bars, chain rows, volatility-index rows, one method each;
- Kafka: closed bars to ``bars``, rollup rows to ``bars-rollups``, priced ticks to ``ticks-priced`` when tick
  storage is on; keyed by underlying like the ``ticks`` record they came from;
- the dead letters (``<ticks topic>.dlq``): ticks the engine rejected before they touched any state;
- the worker's metrics of what the batch did (duplicates, late corrections, rejected ticks, feed gaps, bars
  and rows emitted, event lag).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from loguru import logger

from agents.dead_letters import DeadLetters
from agents.topics import Topics
from pipeline.core.outputs import EngineOutputs
from pipeline.records.bars import encode_bars
from pipeline.records.instruments import InstrumentIndex
from pipeline.records.rollups import encode_rollups
from pipeline.records.ticks import encode_priced_ticks, encode_ticks
from pipeline.records.time_units import label_of
from pipeline.runtime import metrics
from sinks.redis.conflation import ConflatingPublisher


class Emitter:
    """Hands one batch's results on (see the module docstring)."""

    def __init__(self, topics: Topics, dead: DeadLetters, store_ticks: bool) -> None:
        self.topics = topics
        self.dead = dead
        self.store_ticks = store_ticks

    async def emit(self, out: EngineOutputs, redis: ConflatingPublisher, index: InstrumentIndex, origin: Any) -> None:
        """Count, offer to Redis and send to Kafka what ``out`` holds (``index`` names the instruments); ticks the
        engine rejected go to the dead letters of ``origin``, the ticks record they came in."""
        underlying, key = out.underlying, out.underlying.encode()
        count(out)
        if len(out.rejected):
            await self.dead.send_value(origin, key, encode_ticks(underlying, out.rejected), "implausible-future",
                                       f"{len(out.rejected)} ticks with an exchange time more than the allowed skew "
                                       "ahead of their receive time")
        redis.offer_ticks(underlying, out.priced, index)
        if out.bars is not None:
            await self.topics.bars.send(key=key, value=encode_bars(underlying, out.bars))
            redis.offer_bars(underlying, out.bars)
        if len(out.chain_rows) or len(out.vol_index_rows):
            await self.topics.rollups.send(key=key, value=encode_rollups(underlying, out.strike_rows, out.chain_rows,
                                                                         out.vol_index_rows))
            redis.offer_chains(underlying, out.chain_rows)
            redis.offer_vix(underlying, out.vol_index_rows)
        if self.store_ticks and len(out.priced):
            await self.topics.priced_ticks.send(key=key, value=encode_priced_ticks(underlying, out.priced))


def count(out: EngineOutputs) -> None:
    """The metrics of one batch's results."""
    counts, priced, underlying = out.counts, out.priced, out.underlying
    metrics.DUPLICATE_TICKS.inc(counts.duplicates)
    metrics.LATE_CORRECTIONS.inc(counts.late_corrections)
    metrics.TOO_LATE_TICKS.inc(counts.too_late)
    for reason, n in counts.vix_skipped.items():
        metrics.VOL_INDEX_SKIPPED.labels(underlying, reason).inc(n)
    if len(out.rejected):  # logged once, by the dead letters they are sent to
        metrics.TICKS_REJECTED.labels("worker", "future").inc(len(out.rejected))
    if counts.feed_gap_s:
        metrics.FEED_GAPS.labels(underlying).inc()
        logger.warning("feed gap: no {} tick received for {:.1f}s", underlying, counts.feed_gap_s)
    if out.bars is not None:
        for interval, n in zip(*np.unique(out.bars["interval_s"], return_counts=True), strict=True):
            metrics.BARS_EMITTED.labels(label_of(interval)).inc(int(n))
    if len(out.chain_rows):
        metrics.ROLLUP_ROWS.labels("strike_bars").inc(len(out.strike_rows))
        metrics.ROLLUP_ROWS.labels("chain_bars").inc(len(out.chain_rows))
    metrics.TICKS_PROCESSED.labels(underlying).inc(len(priced))
    if len(priced):
        metrics.EVENT_LAG.labels(underlying).set(time.time() - priced["recv_ts"].max() / 1e6)
        metrics.TICK_AGE.touch(underlying, float(priced["recv_ts"].max()) / 1e6)


__all__ = ["Emitter", "count"]
