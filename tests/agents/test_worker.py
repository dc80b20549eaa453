"""The worker as a process (`strikeflow worker`) against the real broker and databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from worker_helpers import NIFTY_INDEX, T0, index_ticks, price_at, wait_for

from pipeline.commands.demo import DEV_KAFKA_ENV
from pipeline.commands.local_services import free_port, start_postgres
from pipeline.feed.tick_producer import TickProducer, ensure_topic
from pipeline.records.ticks import encode_ticks
from sinks.instrument_store import write_instruments
from sinks.migrate import migrate

pytestmark = pytest.mark.integration





async def test_worker_waits_for_dead_postgres_then_writes_bars_once_despite_redelivery(
    kafka_url: str, redis_url: str, unique_name: str, tmp_path: Path
) -> None:
    pg_port = free_port()
    pg_dsn = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"  # nothing listens here yet
    env = {**os.environ, **DEV_KAFKA_ENV, "STRIKEFLOW_KAFKA_URL": kafka_url, "STRIKEFLOW_PG_DSN": pg_dsn,
           "STRIKEFLOW_REDIS_URL": redis_url, "STRIKEFLOW_APP_ID": unique_name,
           "STRIKEFLOW_TICKS_TOPIC": f"{unique_name}-ticks", "STRIKEFLOW_BARS_TOPIC": f"{unique_name}-bars",
           "STRIKEFLOW_WEB_PORT": str(free_port()), "STRIKEFLOW_DATA_DIR": str(tmp_path / "data"),
           "STRIKEFLOW_STORE_TICKS": "false"}
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "pipeline.commands.cli", "worker"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    postgres = None
    try:
        async def worker_complained() -> bool:
            return b"cannot connect to PostgreSQL" in log.read_bytes()

        await wait_for(worker_complained, 60, "the worker to report the dead database")
        assert worker.poll() is None  # it waits; it does not crash

        await ensure_topic(kafka_url, f"{unique_name}-ticks", 4)
        producer = TickProducer(kafka_url, f"{unique_name}-ticks", 1 << 20)
        await producer.start()
        ticks = index_ticks(0, 199, recv_base=1_000)
        for chunk in np.array_split(ticks, 10):
            producer.offer("NIFTY", encode_ticks("NIFTY", chunk))
        producer.offer("NIFTY", encode_ticks("NIFTY", ticks[:50]))  # an at-least-once redelivery
        await producer.stop()

        postgres_dsn, postgres = start_postgres(tmp_path / "pg", port=pg_port)
        await migrate(postgres_dsn)
        await write_instruments(postgres_dsn, "public", [NIFTY_INDEX])

        async def bars_written() -> bool:
            conn = await asyncpg.connect(postgres_dsn)
            try:
                return await conn.fetchval("SELECT count(*) FROM bars_1m") >= 3
            finally:
                await conn.close()

        await wait_for(bars_written, 90, "bars after the database came up")
        with urllib.request.urlopen(f"http://127.0.0.1:{env['STRIKEFLOW_WEB_PORT']}/ready", timeout=5) as response:
            ready = json.loads(response.read())
        assert ready["ready"] is True
        assert {f"{unique_name}-ticks:{p}" for p in range(4)} <= set(ready["assignment"])  # the only worker: all
        conn = await asyncpg.connect(postgres_dsn)
        try:
            rows = await conn.fetch("SELECT extract(epoch FROM bucket)::bigint AS b, open, close, tick_count "
                                    "FROM bars_1m ORDER BY bucket")
        finally:
            await conn.close()
        assert [r["b"] for r in rows[:3]] == [T0, T0 + 60, T0 + 120]
        assert [r["tick_count"] for r in rows[:3]] == [60, 60, 60]  # the redelivered 50 ticks counted once
        assert rows[0]["open"] == 24500 and rows[1]["close"] == price_at(119)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        if postgres is not None:
            postgres.stop()
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
