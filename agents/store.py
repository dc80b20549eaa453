"""Store agents: closed bars, OI rollups (and optionally priced ticks) into PostgreSQL/TimescaleDB.

Records are taken in batches (``stream.take_events``) and written with one bulk upsert per table; the
records are acknowledged only after the batch is handled, i.e. after the write succeeded, so offsets never
run ahead of the database. The one error policy (``pipeline.runtime.errors``): a transient failure (the
database down, a timeout) is retried with the backoff while the topic buffers: a slow database shows up as
consumer lag, never as lost bars, and never slows the live Redis path (a different agent on a different
topic). A poison record (undecodable, or refused by the database for its own content) never stalls the
topic: the batch is written again record by record and what still fails goes to ``<topic>.dlq``
(``agents.dead_letters``), counted and logged once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
import numpy as np
from loguru import logger

from agents.dead_letters import DeadLetters
from agents.resources import WorkerResources
from agents.topics import Topics
from pipeline.records.bars import decode_bars
from pipeline.records.columnar import BatchFormatError
from pipeline.records.rollups import decode_rollups
from pipeline.records.ticks import decode_priced_ticks, record_starts
from pipeline.runtime import metrics
from pipeline.runtime.backoff import retry_forever
from pipeline.runtime.errors import is_transient
from pipeline.runtime.settings import Settings
from sinks.result_writer import Results

TAKE_MAX = 500
TAKE_WITHIN_S = 0.25  # a closed bar waits at most this long for the next records of its batch
RETRY_MAX_S = 2.0  # a database back from an outage is written to within ~2 s (retries are cheap: one round trip)

Write = Callable[[list[Any]], Awaitable[None]]


async def _retrying(what: str, write: Callable[[], Awaitable[None]]) -> None:
    """``write()``, retried while it fails transiently; a poison failure propagates."""
    def failed(exc: BaseException, delay: float) -> None:
        metrics.SINK_ERRORS.labels("postgres").inc()
        logger.warning("writing {} failed ({}); retrying in {:.1f}s", what, type(exc).__name__, delay)

    await retry_forever(write, retry_on=is_transient, on_failure=failed, start_s=0.5, max_s=RETRY_MAX_S)


async def store_batch(events: Sequence[Any], decode: Callable[[bytes], Any], write: Write, what: str,
                      dead: DeadLetters) -> None:
    """Decode ``events`` and ``write`` the decoded records in one go; a poison record goes to the dead letters
    and the others are still written (record by record, once the bulk write failed for a poison)."""
    decoded = []
    for event in events:
        try:
            decoded.append((event, decode(event.message.value)))
        except BatchFormatError as exc:
            await dead.send(event.message, "undecodable", exc)
    if not decoded:
        return
    try:
        await _retrying(what, lambda: write([record for _, record in decoded]))
        return
    except Exception as exc:  # noqa: BLE001 - poison (transient ones were retried): find the record(s)
        logger.warning("writing {} failed on a poison record ({}); writing record by record", what,
                       type(exc).__name__)
    for event, record in decoded:
        try:
            await _retrying(what, lambda r=record: write([r]))
        except Exception as exc:  # noqa: BLE001 - this record is poison
            await dead.send(event.message, "unwritable", exc)


def _count(written: dict[str, int]) -> None:
    for table, rows in written.items():
        metrics.ROWS_WRITTEN.labels(table).inc(rows)


def register_store_agents(app: faust.App, settings: Settings, resources: WorkerResources, topics: Topics,
                          dead: DeadLetters) -> None:
    @app.agent(topics.bars, name="store-bars")
    async def store_bars(stream: faust.StreamT) -> None:
        res = await resources.get()

        async def write(records: list[tuple[str, np.ndarray]]) -> None:
            _count(await res.results.write(Results(bars=np.concatenate([bars for _, bars in records]))))
            for underlying in {u for u, _ in records}:
                metrics.BAR_WRITTEN_AGE.touch(underlying)

        async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            await store_batch(events, decode_bars, write, "bars", dead)

    @app.agent(topics.rollups, name="store-rollups")
    async def store_rollups(stream: faust.StreamT) -> None:
        res = await resources.get()

        async def write(records: list[tuple]) -> None:
            _count(await res.results.write(Results.joined(Results(strike_rows=strikes, chain_rows=chains,
                                                                  vol_index_rows=vix)
                                                          for _, strikes, chains, vix in records)))

        async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            await store_batch(events, decode_rollups, write, "rollups", dead)

    if not settings.store_ticks:
        return

    @app.agent(topics.priced_ticks, name="store-ticks")
    async def store_ticks(stream: faust.StreamT) -> None:
        res = await resources.get()

        async def write(records: list[tuple[str, np.ndarray]]) -> None:
            arrays = [ticks for _, ticks in records]
            ticks = np.concatenate(arrays)
            await res.writer.write_ticks(ticks, record_starts(arrays))
            metrics.ROWS_WRITTEN.labels("ticks").inc(len(ticks))

        async for events in stream.take_events(TAKE_MAX, within=TAKE_WITHIN_S):
            await store_batch(events, decode_priced_ticks, write, "ticks", dead)
