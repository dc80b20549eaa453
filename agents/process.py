"""Process agent: one ``ticks`` record (a batch of one underlying) in, analytics out.

Per batch: decode -> price options (IV, Greeks) -> update 1/5/15-minute bar
aggregators (event time) -> hand live ticks to the conflating Redis publisher
(never awaited per tick: a slow dashboard can't slow us) -> send closed bars to
the ``bars`` topic (and Redis) -> OI rollups of the closed option bars
(pipeline.rollups) to the ``rollups`` topic and chain rows to Redis ->
optionally priced ticks to ``ticks-priced`` for the tick store. State is per underlying, and records are keyed by
underlying, so a partition's state lives in exactly one worker.

Restart safety: open bars live only in memory, so a record is acked (and its
offset committed) only once every bar it fed has closed -- its ticks are older
than the underlying's replay horizon (pipeline.ack_hold). A restarted worker,
or the next owner of a moved partition, replays from the first unacked record
and rebuilds the open bars completely; the partial "warm-up" bars it re-emits
for already-closed buckets lose to the stored complete ones in the bars upsert
(equal last_recv_ts, fewer ticks). Bad and skipped records are released at
once, in partition order. Rollups have no tick count, so before an underlying's
first batch the rollups are told its first tick time and seeded with the newest
stored bar of each option (pipeline.bar_history), so rows of a partial warm-up
bucket (a first tick mid-bucket, bars of it stored) are not emitted; if that
query fails they start unseeded.
"""

from __future__ import annotations

import asyncio
import time

import faust
import numpy as np
from loguru import logger

from pipeline import metrics
from pipeline.ack_hold import AckHold, replay_horizon
from pipeline.bar_history import load_latest_bars
from pipeline.bars import BarAggregator, encode_bars
from pipeline.columnar import BatchFormatError
from pipeline.instrument_index import KIND_CALL, KIND_PUT, InstrumentIndex
from pipeline.rollups import OIRollup, encode_rollups
from pipeline.settings import Settings
from pipeline.tick_batch import decode_ticks, encode_priced_ticks


class UnderlyingState:
    """The bar aggregators and OI rollups of one underlying; closed bars collect in ``closed`` until sent."""

    SEED_TIMEOUT_S = 10.0

    def __init__(self, settings: Settings, underlying: str) -> None:
        self.underlying = underlying
        self.started = False
        self.closed: list[np.ndarray] = []
        self.aggregators = [
            BarAggregator(interval, self.closed.append, grace_s=settings.bar_grace_s, late_window_s=settings.late_window_s)
            for interval in settings.bar_intervals_s
        ]
        # retain what a late correction can still reach: the late window plus the bar's and the next one's interval
        self.rollups = [
            OIRollup(underlying, interval, retain_s=settings.late_window_s + settings.bar_grace_s + 2 * interval)
            for interval in settings.bar_intervals_s
        ]

    async def start(self, pool, schema: str, index: InstrumentIndex, first_tick_ts: int) -> None:  # noqa: ANN001
        """Before the first batch: tell the rollups the first tick time and seed them with the newest
        stored bar of each option (pipeline.rollups, "Restart"); a failed query leaves them unseeded."""
        self.started = True
        own = (index.underlying == self.underlying) & np.isin(index.kind, (KIND_CALL, KIND_PUT))
        for rollup in self.rollups:
            before = rollup.start(first_tick_ts)
            try:
                bars = await asyncio.wait_for(
                    load_latest_bars(pool, schema, rollup.interval_s, index.tokens[own], before), self.SEED_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - never block the live path on the seed
                logger.warning("{} {}s rollups start unseeded: cannot load stored bars ({}: {})",
                               self.underlying, rollup.interval_s, type(exc).__name__, exc)
                continue
            rollup.seed(bars, index)

    def rollup(self, bars: np.ndarray, index: InstrumentIndex) -> tuple[np.ndarray, np.ndarray]:
        """(strike rows, chain rows) of the closed bars, all intervals."""
        parts = [r.update(bars, index) for r in self.rollups]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def add(self, ticks: np.ndarray) -> np.ndarray | None:
        before = [dict(a.stats) for a in self.aggregators]
        for aggregator in self.aggregators:
            aggregator.add_ticks(ticks)
        self._count(before)
        if not self.closed:
            return None
        bars = np.concatenate(self.closed)
        self.closed.clear()
        return bars

    def replay_horizon(self) -> int | None:
        """Oldest exchange time a restart must replay to rebuild this underlying's open bars (None: nothing open)."""
        return replay_horizon(self.aggregators)

    def _count(self, before: list[dict[str, int]]) -> None:
        """Export the aggregators' counters: duplicates once (every aggregator sees the same ticks),
        late corrections and too-late drops summed over the intervals."""
        first = self.aggregators[0].stats
        metrics.DUPLICATE_TICKS.inc(first["duplicates"] - before[0]["duplicates"])
        for aggregator, old in zip(self.aggregators, before, strict=True):
            metrics.LATE_CORRECTIONS.inc(aggregator.stats["late_corrections"] - old["late_corrections"])
            metrics.TOO_LATE_TICKS.inc(aggregator.stats["too_late_dropped"] - old["too_late_dropped"])


async def _send_rollups(underlying: str, strike_rows: np.ndarray, chain_rows: np.ndarray, topics, publisher) -> None:  # noqa: ANN001
    if not len(chain_rows):
        return
    await topics.rollups.send(key=underlying.encode(), value=encode_rollups(underlying, strike_rows, chain_rows))
    metrics.ROLLUP_ROWS.labels("strike_bars").inc(len(strike_rows))
    metrics.ROLLUP_ROWS.labels("chain_bars").inc(len(chain_rows))
    publisher.offer_chain(underlying, chain_rows)


def register_process_agent(app: faust.App, settings: Settings, resources, topics) -> None:  # noqa: ANN001
    states: dict[str, UnderlyingState] = {}
    hold: AckHold = AckHold()  # processed records not yet acked (pipeline.ack_hold: restart safety)

    @app.agent(topics.ticks, name="process")
    async def process(stream: faust.StreamT) -> None:
        manual = stream.noack()
        async for event in manual.events():
            underlying, max_ts = await _process(event.value)
            hold.add(event.message.tp, event, underlying, max_ts)
            for done in hold.release(lambda u: states[u].replay_horizon()):
                await manual.ack(done)

    @app.on_partitions_revoked.connect
    async def _revoked(app: faust.App, revoked: set, **_: object) -> None:  # noqa: ANN001
        hold.forget(revoked)  # never acked here; the partitions' next owner replays them

    async def _process(payload: bytes) -> tuple[str | None, int | None]:
        """Handle one ticks record; (underlying, newest exchange_ts) when it fed the bars, else (None, None)."""
        res = await resources.get()
        try:
            underlying, ticks = decode_ticks(payload)
        except BatchFormatError as exc:
            metrics.BAD_BATCHES.labels(settings.ticks_topic).inc()
            logger.warning("skipping a bad ticks record: {}", exc)
            return None, None
        if np.any(res.instruments.positions(ticks["instrument_token"]) < 0):
            await resources.refresh_instruments()
            res = await resources.get()
        state = states.get(underlying) or states.setdefault(underlying, UnderlyingState(settings, underlying))
        known_ts = ticks["exchange_ts"][ticks["exchange_ts"] > 0]
        if not state.started and len(known_ts):
            await state.start(res.pool, settings.pg_schema, res.instruments, int(known_ts.min()))
        try:
            priced = res.pricer.price(ticks)
            bars = state.add(priced)
        except Exception:  # noqa: BLE001 - one poisoned batch must not stop every underlying
            metrics.BAD_BATCHES.labels(f"{settings.ticks_topic}:process-error").inc()
            logger.exception("skipping a batch of {} {} ticks that failed to process", len(ticks), underlying)
            return None, None
        res.publisher.offer(underlying, priced, res.instruments)
        if bars is not None:
            await topics.bars.send(key=underlying.encode(), value=encode_bars(underlying, bars))
            for interval in np.unique(bars["interval_s"]):
                metrics.BARS_EMITTED.labels(f"{interval // 60}m").inc(int(np.sum(bars["interval_s"] == interval)))
            res.publisher.offer_bars(underlying, bars)
            await _send_rollups(underlying, *state.rollup(bars, res.instruments), topics, res.publisher)
        if settings.store_ticks:
            await topics.priced_ticks.send(key=underlying.encode(), value=encode_priced_ticks(underlying, priced))
        metrics.TICKS_PROCESSED.labels(underlying).inc(len(ticks))
        if not len(ticks):
            return None, None
        metrics.EVENT_LAG.labels(underlying).set(time.time() - ticks["recv_ts"].max() / 1e6)
        return underlying, int(ticks["exchange_ts"].max())
