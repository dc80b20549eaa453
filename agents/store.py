"""Store agents: closed bars, OI rollups (and optionally priced ticks) into PostgreSQL/TimescaleDB.

Records are taken in batches (``stream.take``) and written with one bulk
upsert per table; the records are acknowledged only when the next batch is
taken, i.e. after the write succeeded, so offsets never run ahead of the
database. A failed write is retried with backoff while the topic buffers:
a slow database shows up as consumer lag, never as lost bars, and never slows
the live Redis path (a different agent on a different topic).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust
import numpy as np
from loguru import logger

from agents.resources import WorkerResources
from agents.topics import Topics
from pipeline.records.bars import decode_bars
from pipeline.records.columnar import BatchFormatError
from pipeline.records.rollups import decode_rollups, row_dicts
from pipeline.records.ticks import decode_priced_ticks, record_starts
from pipeline.records.time_units import label_of
from pipeline.runtime import metrics
from pipeline.runtime.backoff import retry_forever
from pipeline.runtime.settings import Settings

TAKE_MAX = 500
TAKE_WITHIN_S = 0.25  # a closed bar waits at most this long for the next records of its batch
RETRY_MAX_S = 2.0  # a database back from an outage is written to within ~2 s (retries are cheap: one round trip)


async def _write_with_retry(what: str, write: Callable[[], Awaitable[int]]) -> None:
    def failed(exc: BaseException, delay: float) -> None:
        metrics.SINK_ERRORS.labels("postgres").inc()
        logger.warning("writing {} failed ({}); retrying in {:.1f}s", what, type(exc).__name__, delay)

    # any sink failure is retried; the record is not acked meanwhile
    await retry_forever(write, retry_on=Exception, on_failure=failed, start_s=0.5, max_s=RETRY_MAX_S)


def _decode_all(payloads: list[bytes], decode: Callable[[bytes], tuple[object, Any]], topic: str,
                keys: set[str] | None = None) -> list[Any]:
    """The decoded arrays of ``payloads`` (bad records counted and skipped); their keys go into ``keys``."""
    arrays = []
    for payload in payloads:
        try:
            key, array = decode(payload)
            arrays.append(array)
            if keys is not None:
                keys.add(str(key))
        except BatchFormatError as exc:
            metrics.BAD_BATCHES.labels(topic).inc()
            logger.warning("skipping a bad {} record: {}", topic, exc)
    return arrays


def register_store_agents(app: faust.App, settings: Settings, resources: WorkerResources, topics: Topics) -> None:
    @app.agent(topics.bars, name="store-bars")
    async def store_bars(stream: faust.StreamT) -> None:
        res = await resources.get()
        async for payloads in stream.take(TAKE_MAX, within=TAKE_WITHIN_S):
            underlyings: set[str] = set()
            arrays = _decode_all(payloads, decode_bars, settings.bars_topic, underlyings)
            if not arrays:
                continue
            bars = np.concatenate(arrays)
            for interval in np.unique(bars["interval_s"]):
                chunk = bars[bars["interval_s"] == interval]
                await _write_with_retry(f"{len(chunk)} bars", lambda c=chunk, i=int(interval): res.writer.write_bars(i, c))
                metrics.ROWS_WRITTEN.labels(f"bars_{label_of(interval)}").inc(len(chunk))
            for underlying in underlyings:
                metrics.BAR_WRITTEN_AGE.touch(underlying)

    @app.agent(topics.rollups, name="store-rollups")
    async def store_rollups(stream: faust.StreamT) -> None:
        res = await resources.get()
        async for payloads in stream.take(TAKE_MAX, within=TAKE_WITHIN_S):
            records = _decode_all(payloads, lambda p: (None, decode_rollups(p)[1:]), topics.rollups.get_topic_name())
            if not records:
                continue
            for table, j, write in (("strike_bars", 0, res.writer.write_strike_bars),
                                    ("chain_bars", 1, res.writer.write_chain_bars),
                                    ("vol_index", 2, res.writer.write_vol_index)):
                rows = np.concatenate([r[j] for r in records])  # (strike rows, chain rows) per record
                for interval in np.unique(rows["interval_s"]).tolist():
                    chunk = row_dicts(rows[rows["interval_s"] == interval])
                    await _write_with_retry(f"{len(chunk)} {table}", lambda w=write, c=chunk, i=interval: w(i, c))
                    metrics.ROWS_WRITTEN.labels(f"{table}_{label_of(interval)}").inc(len(chunk))

    if not settings.store_ticks:
        return

    @app.agent(topics.priced_ticks, name="store-ticks")
    async def store_ticks(stream: faust.StreamT) -> None:
        res = await resources.get()
        async for payloads in stream.take(TAKE_MAX, within=TAKE_WITHIN_S):
            arrays = _decode_all(payloads, decode_priced_ticks, topics.priced_ticks.get_topic_name())
            if arrays:
                ticks, starts = np.concatenate(arrays), record_starts(arrays)
                await _write_with_retry(f"{len(ticks)} ticks", lambda t=ticks, s=starts: res.writer.write_ticks(t, s))
                metrics.ROWS_WRITTEN.labels("ticks").inc(len(ticks))
