"""Two workers in one consumer group: one is SIGKILLed, its partitions move to the other, a third joins;
every stored bar is complete and counted once (the same bars one worker would write)."""

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
    RECV0_US,
    T0,
    assert_complete_bar,
    index_row,
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

PARTITIONS = 4
# One underlying on each of the 4 partitions (aiokafka's murmur2 partitioner): each worker owns some.
UNDERLYINGS = {"NIFTYNXT50": 1_000_009, "UL2": 1_000_265, "FINNIFTY": 1_000_521, "NIFTY": 256265}


async def _produce(kafka_url: str, topic: str, first: int, last: int) -> None:
    producer = TickProducer(kafka_url, topic, 1 << 22)
    await producer.start()
    for n, (name, token) in enumerate(UNDERLYINGS.items()):
        ticks = index_ticks(first, last, recv_base=RECV0_US + 1_000_000 + n * 10_000, token=token)
        for chunk in np.array_split(ticks, max(1, len(ticks) // 10)):
            producer.offer(name, encode_ticks(name, chunk))
    await producer.stop()


async def _bars(pg_dsn: str, schema: str) -> dict[tuple[int, int, int], asyncpg.Record]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = []
        for table, interval in (("bars_1m", 60), ("bars_5m", 300)):
            rows += [(interval, r) for r in await conn.fetch(
                f'SELECT instrument_token, extract(epoch FROM bucket)::bigint AS b, open, high, low, close, tick_count '
                f'FROM "{schema}".{table}')]
    finally:
        await conn.close()
    return {(i, r["instrument_token"], r["b"]): r for i, r in rows}


def _assert_complete(bars: dict, interval: int, buckets: list[int]) -> None:
    for token in UNDERLYINGS.values():
        for bucket in buckets:
            bar = bars.get((interval, token, bucket))
            assert bar is not None, (interval, token, bucket - T0)
            assert_complete_bar(bar, bucket, interval)


async def test_partitions_move_between_workers_with_complete_bars(
    kafka_url: str, pg_dsn: str, pg_schema: str, redis_url: str, unique_name: str, tmp_path: Path
) -> None:
    await migrate(pg_dsn, pg_schema)
    await write_instruments(pg_dsn, pg_schema, [index_row(t, n) for n, t in UNDERLYINGS.items()])
    ticks_topic = f"{unique_name}-ticks"
    await ensure_topic(kafka_url, ticks_topic, PARTITIONS)
    env = worker_env(kafka_url, pg_dsn, pg_schema, redis_url, unique_name,
                     STRIKEFLOW_TOPIC_PARTITIONS=str(PARTITIONS), STRIKEFLOW_CHECKPOINT_INTERVAL_S="1")
    workers: list[subprocess.Popen] = []

    def start(n: int) -> subprocess.Popen:
        workers.append(start_worker({**env, "STRIKEFLOW_WEB_PORT": str(free_port()),
                                     "STRIKEFLOW_DATA_DIR": str(tmp_path / f"data{n}")}, tmp_path / f"worker{n}.log"))
        return workers[-1]

    async def bars_written(interval: int, buckets: list[int]) -> bool:
        bars = await _bars(pg_dsn, pg_schema)
        return all((interval, t, b) in bars for t in UNDERLYINGS.values() for b in buckets)

    async def committed_near_head() -> bool:
        return (await consumer_lag(kafka_url, unique_name, [ticks_topic])).get(ticks_topic, 99) <= PARTITIONS

    try:
        first, second = start(1), start(2)
        await asyncio.sleep(8)  # both join the group (session timeout 6 s in DEV_KAFKA_ENV)
        await _produce(kafka_url, ticks_topic, 0, 90)
        await wait_for(lambda: bars_written(60, [T0]), 120, "the T0 bars of every underlying")
        await wait_for(committed_near_head, 30, "committed offsets near the head")
        os.killpg(first.pid, signal.SIGKILL)  # its partitions' open bars (T0+60) live only in its checkpoints
        first.wait(10)

        await _produce(kafka_url, ticks_topic, 91, 200)
        await wait_for(lambda: bars_written(60, [T0 + 60, T0 + 120]), 120, "the survivor's bars")
        start(3)  # a rebalance: some partitions move again, checkpointed on revoke
        await asyncio.sleep(10)
        await _produce(kafka_url, ticks_topic, 201, 330)
        await wait_for(lambda: bars_written(60, [T0 + 180, T0 + 240]), 120, "bars after the rebalance")
        await wait_for(lambda: bars_written(300, [T0]), 60, "the 5-minute bars")
        await asyncio.sleep(3)  # a wrong late version, if any, lands by now
        bars = await _bars(pg_dsn, pg_schema)
        _assert_complete(bars, 60, [T0 + 60 * i for i in range(5)])
        _assert_complete(bars, 300, [T0])
        assert second.poll() is None
    finally:
        stop_workers(workers)
    logs = "".join((tmp_path / f"worker{n}.log").read_text(errors="replace") for n in (2, 3))
    assert "Traceback" not in logs, logs[-4000:]
    assert "from its checkpoint at offset" in logs, logs[-4000:]
