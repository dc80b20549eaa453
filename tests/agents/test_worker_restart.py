"""A worker killed with open bars: its successor (same app id) restores the checkpoint, replays only what
came after it, and writes complete bars; committed offsets stay within seconds of the head."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from worker_helpers import (
    NIFTY_INDEX,
    T0,
    assert_complete_bar,
    index_ticks,
    start_worker,
    stop_workers,
    wait_for,
    worker_env,
)

from pipeline.commands.local_services import free_port
from pipeline.feed.kafka_topics import consumer_lag, ensure_topic
from pipeline.feed.tick_producer import TickProducer
from pipeline.records.ticks import encode_ticks
from sinks.instrument_store import write_instruments
from sinks.migrate import migrate

pytestmark = pytest.mark.integration

FAUST_COMMIT_INTERVAL_S = 2.8  # faust's default broker_commit_interval
CHECKPOINT_INTERVAL_S = 1.0





async def _produce(kafka_url: str, topic: str, ticks: np.ndarray) -> None:
    producer = TickProducer(kafka_url, topic, 1 << 20)
    await producer.start()
    for chunk in np.array_split(ticks, max(1, len(ticks) // 10)):  # ~10 ticks a record
        producer.offer("NIFTY", encode_ticks("NIFTY", chunk))
    await producer.stop()


async def _bars(pg_dsn: str, schema: str) -> dict[int, asyncpg.Record]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(f'SELECT extract(epoch FROM bucket)::bigint AS b, open, high, low, close, tick_count '
                                f'FROM "{schema}".bars_1m WHERE instrument_token = 256265 ORDER BY bucket')
    finally:
        await conn.close()
    return {r["b"]: r for r in rows}


async def test_worker_killed_with_open_bars_successor_writes_complete_bars(
    kafka_url: str, pg_dsn: str, pg_schema: str, redis_url: str, unique_name: str, tmp_path: Path
) -> None:
    await migrate(pg_dsn, pg_schema)
    await write_instruments(pg_dsn, pg_schema, [NIFTY_INDEX])
    ticks_topic = f"{unique_name}-ticks"
    await ensure_topic(kafka_url, ticks_topic, 4)
    env = worker_env(kafka_url, pg_dsn, pg_schema, redis_url, unique_name,
                     STRIKEFLOW_DATA_DIR=str(tmp_path / "data"),
                     STRIKEFLOW_CHECKPOINT_INTERVAL_S=str(CHECKPOINT_INTERVAL_S))
    workers: list[subprocess.Popen] = []

    def start(n: int) -> subprocess.Popen:
        workers.append(start_worker({**env, "STRIKEFLOW_WEB_PORT": str(free_port())}, tmp_path / f"worker{n}.log"))
        return workers[-1]

    try:
        first = start(1)
        await _produce(kafka_url, ticks_topic, index_ticks(0, 90))  # T0 closes (watermark 90), T0+60 is open

        async def first_bar_written() -> bool:
            return T0 in await _bars(pg_dsn, pg_schema)

        await wait_for(first_bar_written, 90, "the T0 bar from the first worker")
        await asyncio.sleep(3 * FAUST_COMMIT_INTERVAL_S)  # let Faust commit whatever it may commit

        async def committed_near_head() -> bool:  # checkpointed and acked, not held until the bars close
            return (await consumer_lag(kafka_url, unique_name, [ticks_topic])).get(ticks_topic, 99) <= 1

        await wait_for(committed_near_head, CHECKPOINT_INTERVAL_S + 4 * FAUST_COMMIT_INTERVAL_S,
                       "the committed offset of the ticks topic to reach the head (T0+60 is still open)")
        assert first.poll() is None
        os.killpg(first.pid, signal.SIGKILL)  # no shutdown, no flush: open bars are lost with the process
        first.wait(10)

        start(2)
        await _produce(kafka_url, ticks_topic, index_ticks(91, 200))

        async def later_bars_written() -> bool:
            return {T0 + 60, T0 + 120} <= set(await _bars(pg_dsn, pg_schema))

        await wait_for(later_bars_written, 120, "the T0+60 and T0+120 bars from the second worker")
        await asyncio.sleep(2 * FAUST_COMMIT_INTERVAL_S)  # a partial warm-up bar of T0, if any, is written by now
        bars = await _bars(pg_dsn, pg_schema)
        for bucket in (T0, T0 + 60, T0 + 120):
            assert_complete_bar(bars[bucket], bucket)
    finally:
        stop_workers(workers)
    text = (tmp_path / "worker2.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert "from its checkpoint at offset" in text and "NIFTY" in text, text[-3000:]
