"""Process agent: one ``ticks`` record (a batch of one underlying) in, analytics out.

The computation is ``pipeline.core.processor.TickProcessor`` (pure, tested
in-process); this agent only decodes the record, reloads the instrument index
when a token is unknown, seeds a starting underlying's rollups from the stored
bars (``sinks.bar_history``), and hands the result on: live ticks to the
conflating Redis publisher (never awaited per tick: a slow dashboard can't slow
us), closed bars to the ``bars`` topic and Redis, rollup rows to
``bars-rollups`` and Redis, priced ticks to ``ticks-priced`` when tick storage
is on.

State and recovery (``agents.checkpointing``): the processor's state is
checkpointed per partition every ``checkpoint_interval_s``; a record is acked
(its offset committed) once a saved checkpoint covers it, so a restarted
worker, or the next owner of a moved partition, restores the checkpoint and
replays only the few seconds after it; records the checkpoint reflects are
skipped exactly. Bad records are held and acked in partition order like the rest.
"""

from __future__ import annotations

import time
from typing import Any

import faust
import numpy as np
from loguru import logger

from agents.checkpointing import Checkpointer
from agents.dead_letters import DeadLetters
from agents.resources import Connected, WorkerResources
from agents.topics import Topics
from pipeline.core.processor import BarConfig, ProcessResult, TickProcessor
from pipeline.records.bars import encode_bars
from pipeline.records.columnar import BatchFormatError
from pipeline.records.rollups import encode_rollups
from pipeline.records.ticks import decode_ticks_record, encode_priced_ticks
from pipeline.records.time_units import label_of
from pipeline.runtime import metrics
from pipeline.runtime.settings import Settings
from sinks.bar_history import seed_rollups

SEED_TIMEOUT_S = 10.0


def register_process_agent(app: faust.App, settings: Settings, resources: WorkerResources,
                           topics: Topics, dead: DeadLetters) -> Checkpointer:
    processor = TickProcessor(BarConfig.from_settings(settings), settings.vix_roll_days, settings.vix_min_strikes)
    checkpoints = Checkpointer(app, settings, resources, processor)

    @app.agent(topics.ticks, name="process")
    async def process(stream: faust.StreamT) -> None:
        manual = stream.noack()
        checkpoints.ack = manual.ack
        async for event in manual.events():
            tp, offset = event.message.tp, event.message.offset
            async with checkpoints.lock:
                if not await checkpoints.admit(tp, offset):
                    await manual.ack(event)  # the restored checkpoint already reflects it
                    resources.progress.processed(tp, offset)
                    continue
                result = await _process(event.message)
                checkpoints.processed(tp, offset, event, None if result is None else result.underlying)
                resources.progress.processed(tp, offset)

    @app.timer(interval=min(0.5, settings.checkpoint_interval_s / 4))
    async def _checkpoint() -> None:
        # its own task: the agent goes on processing while a checkpoint is saved (it waits only for the snapshot,
        # taken under the lock), and a quiet feed still gets its last records checkpointed and acked; one
        # partition per call, each every checkpoint_interval_s, so the pauses are short and spread
        await checkpoints.take_oldest_due()

    @app.on_partitions_revoked.connect
    async def _revoked(app: faust.App, revoked: set, **_: object) -> None:
        await checkpoints.revoke(tp for tp in revoked if tp.topic == settings.ticks_topic)

    async def _process(message: Any) -> ProcessResult | None:
        """Handle one ticks record; the result when it fed the bars, else None (released at once). A poison
        record (undecodable, or one the core fails on) goes to the dead letters and the next one is processed."""
        res = await resources.get()
        try:
            underlying, ticks, clock = decode_ticks_record(message.value)
        except BatchFormatError as exc:
            metrics.BAD_BATCHES.labels(settings.ticks_topic).inc()
            await dead.send(message, "undecodable", exc)
            return None
        if clock is not None:  # a quiet underlying's exchange clock: close its bars on time
            result = processor.advance(underlying, clock, res.instruments, res.pricer)
            await _emit(result, res, topics, store_ticks=False)
            return result
        if len(ticks):
            metrics.TICK_TO_PROCESS.observe(max(time.time() - int(ticks["recv_ts"].max()) / 1e6, 0.0))
        if np.any(res.instruments.positions(ticks["instrument_token"]) < 0):
            await resources.refresh_instruments()
        await seed_rollups(processor, underlying, ticks, res.pool, res.instruments, settings.pg_schema, SEED_TIMEOUT_S)
        try:
            result = processor.process(underlying, ticks, res.pricer)
        except Exception as exc:  # noqa: BLE001 - one poisoned batch must not stop every underlying
            metrics.BAD_BATCHES.labels(f"{settings.ticks_topic}:process-error").inc()
            await dead.send(message, "process-error", exc)
            return None
        await _emit(result, res, topics, settings.store_ticks)
        return result

    return checkpoints


async def _emit(result: ProcessResult, res: Connected, topics: Topics, store_ticks: bool) -> None:
    """Hand one batch's results on: Redis (conflated, never awaited), Kafka topics, metrics."""
    underlying, key = result.underlying, result.underlying.encode()
    _count(result)
    res.publisher.offer(underlying, result.priced, res.instruments)
    if result.bars is not None:
        await topics.bars.send(key=key, value=encode_bars(underlying, result.bars))
        res.publisher.offer_bars(underlying, result.bars)
    if len(result.chain_rows) or len(result.vol_index_rows):
        await topics.rollups.send(key=key, value=encode_rollups(underlying, result.strike_rows, result.chain_rows,
                                                                result.vol_index_rows))
        res.publisher.offer_chain(underlying, result.chain_rows)
        res.publisher.offer_chain(underlying, result.vol_index_rows)
    if store_ticks:
        await topics.priced_ticks.send(key=key, value=encode_priced_ticks(underlying, result.priced))


def _count(result: ProcessResult) -> None:
    counts, priced = result.counts, result.priced
    metrics.DUPLICATE_TICKS.inc(counts.duplicates)
    metrics.LATE_CORRECTIONS.inc(counts.late_corrections)
    metrics.TOO_LATE_TICKS.inc(counts.too_late)
    for reason, n in counts.vix_skipped.items():
        metrics.VOL_INDEX_SKIPPED.labels(result.underlying, reason).inc(n)
    if counts.future_rejected:
        metrics.TICKS_REJECTED.labels("worker", "future").inc(counts.future_rejected)
        logger.warning("rejected {} {} ticks with an exchange time implausibly far ahead of their receive time",
                       counts.future_rejected, result.underlying)
    if counts.feed_gap_s:
        metrics.FEED_GAPS.labels(result.underlying).inc()
        logger.warning("feed gap: no {} tick received for {:.1f}s", result.underlying, counts.feed_gap_s)
    if result.bars is not None:
        for interval, n in zip(*np.unique(result.bars["interval_s"], return_counts=True), strict=True):
            metrics.BARS_EMITTED.labels(label_of(interval)).inc(int(n))
    if len(result.chain_rows):
        metrics.ROLLUP_ROWS.labels("strike_bars").inc(len(result.strike_rows))
        metrics.ROLLUP_ROWS.labels("chain_bars").inc(len(result.chain_rows))
    metrics.TICKS_PROCESSED.labels(result.underlying).inc(len(priced))
    if len(priced):
        metrics.EVENT_LAG.labels(result.underlying).set(time.time() - priced["recv_ts"].max() / 1e6)
        metrics.TICK_AGE.touch(result.underlying, float(priced["recv_ts"].max()) / 1e6)
