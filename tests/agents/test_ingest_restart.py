"""The ingestor SIGKILLed and restarted under a running worker: the gap is visible (in the stored receive
times) and counted (``strikeflow_feed_gaps_total``), and every 1-minute bar equals its raw ticks."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from worker_helpers import start_worker, stop_workers, wait_for, worker_env

from pipeline.commands.local_services import free_port
from pipeline.runtime.metrics import scrape
from sinks.demo_queries import check_bars_against_ticks
from sinks.migrate import migrate

pytestmark = pytest.mark.integration


async def _ticks_stored(pg_dsn: str, schema: str) -> tuple[int, float]:
    """(ticks stored, the longest silence between consecutive receive times, seconds)."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        row = await conn.fetchrow(
            f'SELECT count(*) AS n, coalesce(max(gap), 0) AS longest FROM (SELECT extract(epoch FROM recv_ts - '
            f'lag(recv_ts) OVER (ORDER BY recv_ts)) AS gap FROM "{schema}".ticks) g')
    finally:
        await conn.close()
    return int(row["n"]), float(row["longest"])


async def test_ingestor_killed_and_restarted_gap_counted_bars_exact(
    kite_simulator, kafka_url: str, pg_dsn: str, pg_schema: str, redis_url: str, unique_name: str, tmp_path: Path
) -> None:  # noqa: ANN001
    await migrate(pg_dsn, pg_schema)
    simulator, addr = await kite_simulator(rate=300)
    started = dt.datetime.now(dt.timezone.utc)
    web_port = free_port()
    env = worker_env(kafka_url, pg_dsn, pg_schema, redis_url, unique_name, STRIKEFLOW_STORE_TICKS="true",
                     STRIKEFLOW_WEB_PORT=str(web_port), STRIKEFLOW_DATA_DIR=str(tmp_path / "data"),
                     STRIKEFLOW_CHECKPOINT_INTERVAL_S="1", STRIKEFLOW_UNDERLYINGS='["NIFTY"]', STRIKEFLOW_EXPIRIES="1",
                     STRIKEFLOW_STRIKES_AROUND_ATM="2", STRIKEFLOW_KITE_SILENCE_TIMEOUT_S="2")
    ingest_argv = [sys.executable, "-m", "pipeline.commands.cli", "ingest", "--ws-url", f"ws://{addr}",
                   "--api-url", f"http://{addr}", "--metrics-port", "0"]

    def start_ingest(n: int) -> subprocess.Popen:
        with open(tmp_path / f"ingest{n}.log", "wb") as out:
            return subprocess.Popen(ingest_argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    processes = [start_ingest(1)]
    try:
        async def instruments_stored() -> bool:
            return b"stored" in (tmp_path / "ingest1.log").read_bytes()

        await wait_for(instruments_stored, 60, "the ingestor to store the instruments")
        processes.append(start_worker(env, tmp_path / "worker.log"))

        async def ticks_flowing(minimum: int) -> bool:
            return (await _ticks_stored(pg_dsn, pg_schema))[0] >= minimum

        await wait_for(lambda: ticks_flowing(300), 90, "ticks through the worker")
        os.killpg(processes[0].pid, signal.SIGKILL)  # no flush, no goodbye
        processes[0].wait(10)
        await asyncio.sleep(4)
        restarted = dt.datetime.now(dt.timezone.utc)
        processes.append(start_ingest(2))

        async def received_after_restart() -> bool:  # not a count: the worker may still be storing older ticks
            conn = await asyncpg.connect(pg_dsn)
            try:
                return await conn.fetchval(f'SELECT count(*) FROM "{pg_schema}".ticks WHERE recv_ts > $1',
                                           restarted) >= 300
            finally:
                await conn.close()

        await wait_for(received_after_restart, 90, "ticks received by the restarted ingestor")
        processes[-1].send_signal(signal.SIGTERM)  # a clean stop now: the worker drains what was produced
        processes[-1].wait(20)
        await asyncio.sleep(6)

        stored, longest_gap = await _ticks_stored(pg_dsn, pg_schema)
        assert longest_gap > 3.5, longest_gap  # the outage shows in the receive times
        gaps = scrape(f"http://127.0.0.1:{web_port}/metrics").get("strikeflow_feed_gaps_total", 0)
        assert gaps >= 1, gaps
        checked, differ = await check_bars_against_ticks(pg_dsn, pg_schema, started)
        assert checked > 20 and differ == 0, (checked, differ)
    finally:
        for proc in processes[:1] + processes[2:]:
            if proc.poll() is None:
                proc.kill()
        stop_workers(processes[1:2])
    text = (tmp_path / "worker.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert "feed gap: no NIFTY tick received for" in text, text[-3000:]
