"""Apache Kafka SIGKILLed mid-stream and restarted on the same log directory, under a live ingestor and
worker: the ingestor buffers meanwhile, nothing is lost (every tick the ingestor read is stored once),
every 1-minute bar equals its raw ticks, and live ticks are back on Redis within seconds of the broker's
return (the figure is printed and written to ``broker-restart.json`` in the test's directory)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from worker_helpers import start_worker, stop_workers, wait_for, worker_env

from pipeline.commands.local_kafka import kafka_available, restart_kafka, start_kafka
from pipeline.commands.local_services import free_port
from sinks.demo_queries import check_bars_against_ticks
from sinks.migrate import migrate

pytestmark = pytest.mark.integration


async def _stored_ticks(pg_dsn: str, schema: str, since: dt.datetime | None = None) -> int:
    conn = await asyncpg.connect(pg_dsn)
    try:
        if since is None:
            return await conn.fetchval(f'SELECT count(*) FROM "{schema}".ticks')
        return await conn.fetchval(f'SELECT count(*) FROM "{schema}".ticks WHERE recv_ts > $1', since)
    finally:
        await conn.close()


class RedisWatch:
    """(arrival time, newest recv_ts in the message, epoch s) of every live NIFTY batch on Redis."""

    def __init__(self, redis_url: str) -> None:
        self.client = aioredis.from_url(redis_url)
        self.seen: list[tuple[float, float]] = []
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        pubsub = self.client.pubsub()
        await pubsub.subscribe("ticks:NIFTY")

        async def listen() -> None:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    ticks = json.loads(message["data"])["ticks"]
                    self.seen.append((time.time(), max(t["recv_ts"] for t in ticks) / 1e6))

        self.task = asyncio.create_task(listen())

    def first_received_after(self, epoch_s: float) -> float | None:
        """When the first message carrying a tick received after ``epoch_s`` arrived."""
        return next((at for at, newest in self.seen if newest > epoch_s), None)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.client.aclose()


async def test_broker_killed_and_restarted_loses_nothing_and_live_ticks_return(
    kite_simulator, pg_dsn: str, pg_schema: str, redis_url: str, unique_name: str, tmp_path: Path
) -> None:  # noqa: ANN001
    if kafka_available() is not None:
        pytest.skip(f"the broker restart needs Apache Kafka: {kafka_available()}")
    broker = start_kafka(tmp_path / "kafka-logs", data_dir=tmp_path / "kafka-data")
    await migrate(pg_dsn, pg_schema)
    _, addr = await kite_simulator(rate=300)
    started = dt.datetime.now(dt.timezone.utc)
    env = worker_env(broker.url, pg_dsn, pg_schema, redis_url, unique_name, STRIKEFLOW_STORE_TICKS="true",
                     STRIKEFLOW_WEB_PORT=str(free_port()), STRIKEFLOW_DATA_DIR=str(tmp_path / "data"),
                     STRIKEFLOW_CHECKPOINT_INTERVAL_S="1", STRIKEFLOW_UNDERLYINGS='["NIFTY"]', STRIKEFLOW_EXPIRIES="1",
                     STRIKEFLOW_STRIKES_AROUND_ATM="2")
    with open(tmp_path / "ingest.log", "wb") as out:
        ingest = subprocess.Popen([sys.executable, "-m", "pipeline.commands.cli", "ingest", "--ws-url", f"ws://{addr}",
                                   "--api-url", f"http://{addr}", "--metrics-port", "0"],
                                  env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    worker = start_worker(env, tmp_path / "worker.log")
    watch = RedisWatch(redis_url)
    await watch.start()
    try:
        await wait_for(lambda: _ticks_at_least(pg_dsn, pg_schema, 300), 120, "ticks through the worker")
        os.kill(broker.process.pid, signal.SIGKILL)  # no flush, no controlled shutdown
        broker.process.popen.wait(10)
        await asyncio.sleep(5)  # the ingestor buffers, the worker's consumer retries
        broker = await asyncio.to_thread(restart_kafka, broker, tmp_path / "kafka-logs")
        back = time.time()

        async def live_again() -> bool:
            return watch.first_received_after(back) is not None

        await wait_for(live_again, 60, "a tick received after the broker's return on Redis")
        recovery_s = watch.first_received_after(back) - back
        restarted = dt.datetime.fromtimestamp(back, dt.timezone.utc)
        await wait_for(lambda: _ticks_at_least(pg_dsn, pg_schema, 300, restarted), 90, "ticks after the restart")
        ingest.send_signal(signal.SIGTERM)  # a clean stop: the ingestor flushes, the worker drains
        ingest.wait(30)
        summary = re.search(r"ingest stopped: \d+ frames, (\d+) ticks, .* (\d+) batches dropped",
                            (tmp_path / "ingest.log").read_text(errors="replace"))
        assert summary is not None, (tmp_path / "ingest.log").read_text(errors="replace")[-3000:]
        read, dropped = int(summary.group(1)), int(summary.group(2))

        async def all_stored() -> bool:
            return await _stored_ticks(pg_dsn, pg_schema) >= read

        await wait_for(all_stored, 90, f"all {read} ticks the ingestor read stored")
        await asyncio.sleep(3)  # anything stored twice would show up now
        stored = await _stored_ticks(pg_dsn, pg_schema)
        checked, differ = await check_bars_against_ticks(pg_dsn, pg_schema, started)
    finally:
        if ingest.poll() is None:
            ingest.kill()
        stop_workers([worker])
        await watch.close()
        broker.process.stop()
    figures = {"recovery_s": round(recovery_s, 2), "ticks_read": read, "ticks_stored": stored,
               "bars_checked": checked, "bars_differ": differ}
    (tmp_path / "broker-restart.json").write_text(json.dumps(figures))
    print(f"broker restart: {figures}")
    assert dropped == 0 and stored == read, figures
    assert checked > 20 and differ == 0, figures
    text = (tmp_path / "worker.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


async def _ticks_at_least(pg_dsn: str, schema: str, minimum: int, since: dt.datetime | None = None) -> bool:
    return await _stored_ticks(pg_dsn, schema, since) >= minimum
