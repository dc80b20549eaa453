"""sinks.migrate against the real PostgreSQL (one fresh schema per test)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import pytest

from sinks.migrate import load_migrations, migrate, schema_problem, status

pytestmark = pytest.mark.integration

BAR_COLUMNS = {"bucket", "instrument_token", "open", "high", "low", "close", "volume", "oi", "oi_open", "oi_high",
               "oi_low", "vwap", "tick_count", "forward", "iv", "delta", "gamma", "theta", "vega", "rho",
               "last_recv_ts", "mid_iv", "forward_source", "stale", "near_expiry", "spot_delta", "source"}
SIDE = {"close", "volume", "oi", "oi_change", "iv", "delta", "mid_iv", "gex", "buildup"}
EXPECTED = {
    "instruments": {"instrument_token", "exchange_token", "tradingsymbol", "name", "expiry", "strike", "tick_size",
                    "lot_size", "instrument_type", "segment", "exchange", "last_price", "updated_at"},
    "ticks": {"exchange_ts", "recv_ts", "instrument_token", "last_price", "volume", "oi", "bid", "ask", "forward",
              "iv", "delta", "gamma", "theta", "vega", "rho", "last_trade_ts", "mid_iv", "forward_source", "stale",
              "near_expiry", "spot_delta", "record_recv_ts"},
    **{f"bars_{tf}": BAR_COLUMNS for tf in ("1m", "5m", "15m")},
    **{f"strike_bars_{tf}": {"underlying", "expiry", "strike", "bucket", "forward", "last_recv_ts"}
       | {f"call_{c}" for c in SIDE} | {f"put_{c}" for c in SIDE} for tf in ("1m", "5m", "15m")},
    **{f"chain_bars_{tf}": {"underlying", "expiry", "bucket", "total_call_oi", "total_put_oi", "pcr", "max_pain",
                            "atm_strike", "atm_iv", "forward", "call_volume", "put_volume", "last_recv_ts",
                            "strikes_listed", "strikes_covered", "rr25", "bf25", "gex", "gex_flip",
                            "parity_violations", "crossed_quotes", "butterfly_violations", "strikes_quoted"}
       for tf in ("1m", "5m", "15m")},
    "backfill_checked": {"instrument_token", "since", "until", "checked_at"},
}
PRIMARY_KEYS = {
    "ticks": ["instrument_token", "recv_ts"],
    "bars_5m": ["instrument_token", "bucket"],
    "strike_bars_15m": ["underlying", "expiry", "strike", "bucket"],
    "chain_bars_1m": ["underlying", "expiry", "bucket"],
    "instruments": ["instrument_token"],
}
VIEWS = {"option_bars_1m", "option_bars_5m", "option_bars_15m", "pcr_1m", "pcr_5m", "pcr_15m",
         "strike_oi_distribution", "option_chain_latest"}


async def _columns(conn: asyncpg.Connection, schema: str) -> dict[str, set[str]]:
    rows = await conn.fetch("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = $1",
                            schema)
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r["table_name"], set()).add(r["column_name"])
    return out


async def test_migrate_fresh_schema_creates_tables_and_views(pg_dsn, pg_schema):
    report = await migrate(pg_dsn, pg_schema)
    assert f"schema {pg_schema}: applied 0001_init" in report
    conn = await asyncpg.connect(pg_dsn)
    try:
        columns = await _columns(conn, pg_schema)
        for table, expected in EXPECTED.items():
            assert columns.get(table) == expected, table
        for tf in ("1m", "5m", "15m"):
            assert {"mid_iv", "forward_source", "stale", "near_expiry", "spot_delta", "moneyness"} <= columns[f"option_bars_{tf}"]
        views = {r["table_name"] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.views WHERE table_schema = $1", pg_schema)}
        assert VIEWS <= views
        for table, key in PRIMARY_KEYS.items():
            got = await conn.fetchval(
                "SELECT array_agg(a.attname ORDER BY array_position(i.indkey, a.attnum)) FROM pg_index i "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indrelid = $1::regclass AND i.indisprimary", f'"{pg_schema}".{table}')
            assert got == key, table
        for view in VIEWS:  # every view is queryable
            await conn.fetch(f'SELECT * FROM "{pg_schema}".{view} LIMIT 1')
        timescale = await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    finally:
        await conn.close()
    if not timescale:
        assert "timescaledb not available" in report and "skipped 0002_timescale" in report


async def test_migrate_twice_second_is_noop(pg_dsn, pg_schema):
    await migrate(pg_dsn, pg_schema)
    report = await migrate(pg_dsn, pg_schema)
    assert "up to date" in report and "applied" not in report
    conn = await asyncpg.connect(pg_dsn)
    try:
        versions = await conn.fetch(f'SELECT version FROM "{pg_schema}".schema_migrations ORDER BY version')
    finally:
        await conn.close()
    assert [r["version"] for r in versions][0] == "0001"
    assert len(versions) == len(set(r["version"] for r in versions))


async def test_migrate_concurrent_calls_apply_once(pg_dsn, pg_schema):
    reports = await asyncio.gather(*(migrate(pg_dsn, pg_schema) for _ in range(3)))
    assert sum("applied 0001_init" in r for r in reports) == 1
    assert sum("up to date" in r for r in reports) == 2


async def test_migrate_missing_schema_created(pg_dsn, unique_name):
    schema = f"test_{unique_name}_new"
    try:
        report = await migrate(pg_dsn, schema)
        assert "applied 0001_init" in report
    finally:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def test_migrate_bad_schema_name_raises(pg_dsn):
    with pytest.raises(ValueError):
        await migrate(pg_dsn, 'x"; DROP TABLE y; --')


async def _objects(conn: asyncpg.Connection, schema: str) -> tuple[set[str], set[str]]:
    """(tables and views, functions) in ``schema``."""
    relations = {r["relname"] for r in await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relkind IN ('r', 'v', 'p', 'i')", schema)}
    functions = {r["proname"] for r in await conn.fetch(
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1", schema)}
    return relations, functions


async def test_migrate_to_zero_removes_everything_and_forward_again_restores_it(pg_dsn, pg_schema):
    await migrate(pg_dsn, pg_schema)
    conn = await asyncpg.connect(pg_dsn)
    try:
        relations, functions = await _objects(conn, pg_schema)
        assert {"bars_1m", "option_chain_latest", "schema_migrations"} <= relations
        assert {"strike_distribution", "moneyness_series"} <= functions
        report = await migrate(pg_dsn, pg_schema, to=0)
        assert "rolled back 0014_checked_arguments, 0013_latest_bucket_once, 0012_backfill_checked, 0011_volatility_analytics, 0010_vol_index" in report
        assert await _objects(conn, pg_schema) == (set(), set())
        await migrate(pg_dsn, pg_schema)
        columns = await _columns(conn, pg_schema)
        for table, expected in EXPECTED.items():
            assert columns.get(table) == expected, table
    finally:
        await conn.close()


async def test_migrate_to_a_version_rolls_back_only_the_newer_ones_and_keeps_data(pg_dsn, pg_schema):
    await migrate(pg_dsn, pg_schema)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f'INSERT INTO "{pg_schema}".chain_bars_1m (underlying, expiry, bucket, pcr, strikes_listed, '
                           "last_recv_ts) VALUES ('NIFTY', '2030-01-31', '2030-01-01 04:00+00', 0.9, 40, now())")
        await migrate(pg_dsn, pg_schema, to=3)
        columns = await _columns(conn, pg_schema)
        assert "mid_iv" not in columns["bars_1m"] and "strikes_listed" not in columns["chain_bars_1m"]
        assert "spot_delta" not in columns["option_bars_1m"] and "moneyness" in columns["option_bars_1m"]
        assert await conn.fetchval(f'SELECT pcr FROM "{pg_schema}".chain_bars_1m') == 0.9
        states = {s.name: s.state for s in await status(pg_dsn, pg_schema)}
        assert states["0003_worker_checkpoints"] == "applied"
        assert states["0004_pricing_freshness"] == states["0006_analyst_functions"] == "pending"
        await migrate(pg_dsn, pg_schema)
        assert (await _columns(conn, pg_schema))["chain_bars_1m"] == EXPECTED["chain_bars_1m"]
    finally:
        await conn.close()


async def test_migrate_to_an_unknown_version_changes_nothing_and_says_which_exist(pg_dsn, pg_schema):
    await migrate(pg_dsn, pg_schema)
    with pytest.raises(ValueError, match="no migration version 42: versions are 0"):
        await migrate(pg_dsn, pg_schema, to=42)
    assert all(s.state in ("applied", "needs timescaledb") for s in await status(pg_dsn, pg_schema))


async def test_status_of_a_fresh_schema_lists_every_version_pending(pg_dsn, pg_schema):
    rows = await status(pg_dsn, pg_schema)
    assert [r.name for r in rows] == [m.name for m in load_migrations()]
    assert {r.state for r in rows} <= {"pending", "needs timescaledb"} and all(r.applied_at is None for r in rows)


async def test_schema_problem_names_the_missing_migrations_until_migrated(pg_dsn, pg_schema):
    problem = await schema_problem(pg_dsn, pg_schema)
    assert problem is not None and "0001_init" in problem and "run `strikeflow migrate`" in problem
    await migrate(pg_dsn, pg_schema)
    assert await schema_problem(pg_dsn, pg_schema) is None
    assert await schema_problem("postgresql://nobody@127.0.0.1:1/none", pg_schema, timeout_s=1) is None


def test_every_migration_has_a_rollback_part():
    assert all(m.rollback and m.rollback.strip() for m in load_migrations())


async def test_ingest_against_a_schema_behind_stops_with_one_line(pg_dsn, pg_schema):
    env = {**os.environ, "STRIKEFLOW_KAFKA_URL": "kafka://127.0.0.1:1", "STRIKEFLOW_PG_DSN": pg_dsn,
           "STRIKEFLOW_PG_SCHEMA": pg_schema}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "pipeline.commands.cli", "ingest", env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = [line for line in err.decode().splitlines() if line.strip() and "schema check" not in line]
    assert proc.returncode == 2
    assert len(lines) == 1 and "run `strikeflow migrate`" in lines[0] and "0001_init" in lines[0]
