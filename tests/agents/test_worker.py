"""The worker as a process (`strikeflow worker`) against the real broker and databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from worker_helpers import NIFTY_INDEX, RECV0_US, T0, index_ticks, price_at, wait_for

from pipeline.commands.demo import DEV_KAFKA_ENV
from pipeline.commands.local_services import free_port, start_postgres
from pipeline.feed.kafka_topics import ensure_topic
from pipeline.feed.tick_producer import TickProducer
from pipeline.records.ticks import encode_ticks
from sinks.instrument_store import write_instruments
from sinks.migrate import load_migrations, migrate

pytestmark = pytest.mark.integration


def _get_json(url: str) -> tuple[int, dict]:
    """(status, body) of a GET, for 503 answers as well."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}





async def test_worker_waits_for_dead_postgres_then_writes_bars_once_despite_redelivery(
    kafka_url: str, redis_url: str, unique_name: str, tmp_path: Path
) -> None:
    pg_port = free_port()
    pg_dsn = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"  # nothing listens here yet
    env = {**os.environ, **DEV_KAFKA_ENV, "STRIKEFLOW_KAFKA_URL": kafka_url, "STRIKEFLOW_PG_DSN": pg_dsn,
           "STRIKEFLOW_REDIS_URL": redis_url, "STRIKEFLOW_APP_ID": unique_name,
           "STRIKEFLOW_TICKS_TOPIC": f"{unique_name}-ticks", "STRIKEFLOW_BARS_TOPIC": f"{unique_name}-bars",
           "STRIKEFLOW_WEB_PORT": str(free_port()), "STRIKEFLOW_DATA_DIR": str(tmp_path / "data"),
           "STRIKEFLOW_STORE_TICKS": "false", "STRIKEFLOW_READY_STALL_S": "3"}
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
        ticks = index_ticks(0, 199, recv_base=RECV0_US + 1_000)
        for chunk in np.array_split(ticks, 10):
            producer.offer("NIFTY", encode_ticks("NIFTY", chunk))
        producer.offer("NIFTY", encode_ticks("NIFTY", ticks[:50]))  # an at-least-once redelivery
        await producer.stop()

        # the agent waits for the database with records queued: /ready says so, check by check, within seconds
        ready_url = f"http://127.0.0.1:{env['STRIKEFLOW_WEB_PORT']}/ready"

        async def consumer_stalled() -> bool:
            status, body = _get_json(ready_url)
            return status == 503 and "records waiting" in body["checks"].get("consumer", {}).get("reason", "")

        await wait_for(consumer_stalled, 60, "/ready to report the stalled consumer")
        status, red = _get_json(ready_url)
        assert red["ready"] is False and red["checks"]["database"]["ok"] is False
        assert "not connected yet" in red["checks"]["database"]["reason"]
        assert "records waiting, none processed for" in red["checks"]["consumer"]["reason"]
        assert red["checks"]["tasks"]["ok"] is True and red["checks"]["broker"]["ok"] is True
        assert _get_json(ready_url.replace("/ready", "/health"))[0] == 200  # alive: it waits, it is not stuck

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
        async def all_ready() -> bool:
            return _get_json(ready_url)[0] == 200

        await wait_for(all_ready, 30, "/ready once the database is up")
        ready = _get_json(ready_url)[1]
        assert ready["ready"] is True
        assert {name for name, check in ready["checks"].items() if check["ok"]} == {
            "broker", "consumer", "database", "redis", "tasks"}
        assert ready["checks"]["database"]["schema_version"] == load_migrations()[-1].name
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
