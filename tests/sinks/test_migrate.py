"""sinks.migrate against the real PostgreSQL (one fresh schema per test)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from sinks.migrate import migrate

pytestmark = pytest.mark.integration

BAR_COLUMNS = {"bucket", "instrument_token", "open", "high", "low", "close", "volume", "oi", "oi_open", "oi_high",
               "oi_low", "vwap", "tick_count", "forward", "iv", "delta", "gamma", "theta", "vega", "rho",
               "last_recv_ts", "mid_iv", "forward_source", "stale", "near_expiry", "spot_delta"}
SIDE = {"close", "volume", "oi", "oi_change", "iv", "delta", "mid_iv"}
EXPECTED = {
    "instruments": {"instrument_token", "exchange_token", "tradingsymbol", "name", "expiry", "strike", "tick_size",
                    "lot_size", "instrument_type", "segment", "exchange", "last_price", "updated_at"},
    "ticks": {"exchange_ts", "recv_ts", "instrument_token", "last_price", "volume", "oi", "bid", "ask", "forward",
              "iv", "delta", "gamma", "theta", "vega", "rho", "last_trade_ts", "mid_iv", "forward_source", "stale",
              "near_expiry", "spot_delta"},
    **{f"bars_{tf}": BAR_COLUMNS for tf in ("1m", "5m", "15m")},
    **{f"strike_bars_{tf}": {"underlying", "expiry", "strike", "bucket", "forward", "last_recv_ts"}
       | {f"call_{c}" for c in SIDE} | {f"put_{c}" for c in SIDE} for tf in ("1m", "5m", "15m")},
    **{f"chain_bars_{tf}": {"underlying", "expiry", "bucket", "total_call_oi", "total_put_oi", "pcr", "max_pain",
                            "atm_strike", "atm_iv", "forward", "call_volume", "put_volume", "last_recv_ts",
                            "strikes_listed", "strikes_covered"}
       for tf in ("1m", "5m", "15m")},
}
PRIMARY_KEYS = {
    "ticks": ["instrument_token", "recv_ts"],
    "bars_5m": ["instrument_token", "bucket"],
    "strike_bars_15m": ["underlying", "expiry", "strike", "bucket"],
    "chain_bars_1m": ["underlying", "expiry", "bucket"],
    "instruments": ["instrument_token"],
}
VIEWS = {"option_bars_1m", "option_bars_5m", "option_bars_15m", "pcr_1m", "pcr_5m", "pcr_15m",
         "strike_oi_distribution"}


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
