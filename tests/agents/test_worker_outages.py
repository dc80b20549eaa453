"""PostgreSQL stopped for 30 s, then Redis stopped for 20 s, under a live feed: the worker keeps running,
the live Redis path is unaffected by the database and resumes by itself, writes resume within seconds of
the database's return, and every stored 1-minute bar is exact."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
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

from pipeline.commands.local_services import free_port, start_postgres, start_redis
from pipeline.feed.kafka_topics import ensure_topic
from pipeline.feed.tick_producer import TickProducer
from pipeline.records.ticks import encode_ticks
from sinks.instrument_store import write_instruments
from sinks.migrate import migrate

pytestmark = pytest.mark.integration

SECONDS_PER_STEP = 10  # exchange seconds produced every STEP_S of wall time: a minute in 1.5 s
STEP_S = 0.25


class Feed:
    """Produces NIFTY 50 ticks, one per exchange second, received 'now' (so Redis publishes them)."""

    def __init__(self, kafka_url: str, topic: str) -> None:
        self.producer = TickProducer(kafka_url, topic, 1 << 24)
        self.second = 0
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.producer.start()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            ticks = index_ticks(self.second, self.second + SECONDS_PER_STEP - 1, recv_base=time.time_ns() // 1000)
            self.producer.offer("NIFTY", encode_ticks("NIFTY", ticks))
            self.second += SECONDS_PER_STEP
            await asyncio.sleep(STEP_S)

    async def stop(self) -> None:
        if self.task is None:
            return
        self.task.cancel()
        self.task = None
        await self.producer.stop()


async def _bar_buckets(dsn: str, schema: str) -> dict[int, asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await conn.fetch(f'SELECT extract(epoch FROM bucket)::bigint AS b, open, high, low, close, tick_count '
                                f'FROM "{schema}".bars_1m WHERE instrument_token = 256265')
    finally:
        await conn.close()
    return {r["b"]: r for r in rows}


async def _newest_live_tick_age_s(redis_url: str, channel: str, timeout: float) -> float | None:
    """Subscribe, wait for one ticks message, return now - its newest recv_ts (None: nothing came)."""
    client = aioredis.from_url(redis_url)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(channel)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if msg and msg["type"] == "message":
                newest = max(t["recv_ts"] for t in json.loads(msg["data"])["ticks"])
                return time.time() - newest / 1e6
        return None
    finally:
        await pubsub.aclose()
        await client.aclose()


async def test_postgres_then_redis_outage_under_a_live_feed(kafka_url: str, unique_name: str, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    pg_port, redis_port = free_port(), free_port()
    # outside pytest's tmp_path: as root the server runs as the postgres user, who cannot enter it
    pg_dir = Path(tempfile.mkdtemp(prefix="strikeflow-outage-pg-"))
    pg_dsn, pg = start_postgres(logs, pg_port, pg_dir)
    redis_url, redis_proc = start_redis(logs, redis_port)
    schema = "outage"
    await migrate(pg_dsn, schema)
    await write_instruments(pg_dsn, schema, [NIFTY_INDEX])
    topic = f"{unique_name}-ticks"
    await ensure_topic(kafka_url, topic, 2)
    env = worker_env(kafka_url, pg_dsn, schema, redis_url, unique_name, STRIKEFLOW_DATA_DIR=str(tmp_path / "data"),
                     STRIKEFLOW_CHECKPOINT_INTERVAL_S="1", STRIKEFLOW_WEB_PORT=str(free_port()),
                     STRIKEFLOW_TOPIC_PARTITIONS="2")
    worker = start_worker(env, tmp_path / "worker.log")
    feed = Feed(kafka_url, topic)
    try:
        await feed.start()

        async def bars_beyond(bucket: int) -> bool:
            try:
                return any(b > bucket for b in await _bar_buckets(pg_dsn, schema))
            except (OSError, asyncpg.PostgresError):
                return False

        await wait_for(lambda: bars_beyond(T0 + 60), 90, "bars before the outages")

        # --- PostgreSQL down for 30 s: the live path goes on, the database path waits
        before = max(await _bar_buckets(pg_dsn, schema))
        pg.stop(timeout=10)
        await asyncio.sleep(5)
        age = await _newest_live_tick_age_s(redis_url, "ticks:NIFTY", timeout=10)
        assert age is not None and age < 5, age  # fresh ticks on Redis while the database is down
        await asyncio.sleep(25)
        _, pg = start_postgres(logs, pg_port, pg_dir)  # the same cluster, its data, its port
        pg_up = time.monotonic()
        await wait_for(lambda: bars_beyond(before), 30, "bars written after PostgreSQL returned")
        resumed_s = time.monotonic() - pg_up
        assert resumed_s < 10, resumed_s  # retries capped at 2 s (measured ~2 s here)

        # --- Redis down for 20 s: the database path goes on, the live path resumes by itself
        redis_proc.stop(timeout=10)
        newest = max(await _bar_buckets(pg_dsn, schema))
        await wait_for(lambda: bars_beyond(newest + 60), 20, "bars written while Redis is down")
        await asyncio.sleep(15)
        redis_url, redis_proc = start_redis(logs, redis_port)
        redis_up = time.monotonic()
        age = await _newest_live_tick_age_s(redis_url, "ticks:NIFTY", timeout=20)
        assert age is not None and age < 5, age
        live_again_s = time.monotonic() - redis_up
        assert live_again_s < 15, live_again_s

        await feed.stop()
        last = feed.second - 1
        closed = [T0 + 60 * i for i in range((last - 62) // 60)]  # every bucket the watermark has closed
        await wait_for(lambda: bars_beyond(closed[-1] - 1), 30, "the last closed bar")
        bars = await _bar_buckets(pg_dsn, schema)
        for bucket in closed:
            assert_complete_bar(bars[bucket], bucket)
        assert worker.poll() is None
        print(f"\nwrites resumed {resumed_s:.1f} s after PostgreSQL returned; fresh ticks on Redis "
              f"{live_again_s:.1f} s after Redis returned; {len(closed)} bars exact")
    finally:
        await feed.stop()
        stop_workers([worker])
        for proc in (pg, redis_proc):
            proc.stop(timeout=10)
        shutil.rmtree(pg_dir, ignore_errors=True)
    text = (tmp_path / "worker.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]

