"""The demo's own database work: counting rows, checking bars against raw ticks, schema housekeeping.

``check_bars_against_ticks`` is the end-to-end oracle the demo prints: it
rebuilds a run's closed 1-minute bars from the stored raw ticks in plain SQL
(group, order, take first/last) and counts the bars that differ.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import asyncpg

from sinks.migrate import quote_ident

DEMO_TABLES = ("instruments", "ticks", "bars_1m", "bars_5m", "bars_15m", "strike_bars_1m", "chain_bars_1m",
               "vol_index_1m")

# Per underlying: the newest 1-minute volatility index and, at the same bucket, the skew (rr25, bf25) and ATM IV
# of the index's near expiry.
_VOLATILITY_SQL = """
SELECT DISTINCT ON (v.underlying) v.underlying, v.bucket, v.vix, v.near_expiry, v.next_expiry,
       c.rr25, c.bf25, c.atm_iv
FROM {schema}.vol_index_1m v
LEFT JOIN {schema}.chain_bars_1m c
       ON c.underlying = v.underlying AND c.expiry = v.near_expiry AND c.bucket = v.bucket
ORDER BY v.underlying, v.bucket DESC
"""


async def latest_volatility(dsn: str, schema: str) -> list[dict]:
    """Per underlying, the newest live volatility index with its near expiry's skew and ATM IV at that bucket."""
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch(_VOLATILITY_SQL.format(schema=quote_ident(schema)))]
    finally:
        await conn.close()


async def table_counts(dsn: str, schema: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        counts = {}
        for table in DEMO_TABLES:
            counts[table] = await conn.fetchval(f"SELECT count(*) FROM {quote_ident(schema)}.{table}")
        return counts
    finally:
        await conn.close()


# Rebuild this run's closed 1-minute bars from the stored raw ticks in SQL and count the
# bars that differ (OHLC, tick_count, OI at close): the pipeline checked end to end.
_CHECK_BARS_SQL = """
WITH t AS (
    SELECT instrument_token, to_timestamp(floor(extract(epoch FROM exchange_ts) / 60) * 60) AS bucket,
           last_price, oi, exchange_ts, recv_ts
    FROM "{schema}".ticks WHERE recv_ts >= $1
), rebuilt AS (
    SELECT instrument_token, bucket,
           (array_agg(last_price ORDER BY exchange_ts, recv_ts))[1] AS open,
           max(last_price) AS high, min(last_price) AS low,
           (array_agg(last_price ORDER BY exchange_ts DESC, recv_ts DESC))[1] AS close,
           (array_agg(oi ORDER BY exchange_ts DESC, recv_ts DESC))[1] AS oi,
           count(*) AS tick_count
    FROM t GROUP BY instrument_token, bucket
)
SELECT count(*) AS checked,
       count(*) FILTER (WHERE r.open IS DISTINCT FROM b.open OR r.high IS DISTINCT FROM b.high
                        OR r.low IS DISTINCT FROM b.low OR r.close IS DISTINCT FROM b.close
                        OR r.oi IS DISTINCT FROM b.oi OR r.tick_count IS DISTINCT FROM b.tick_count) AS differ
FROM "{schema}".bars_1m b LEFT JOIN rebuilt r USING (instrument_token, bucket)
WHERE b.last_recv_ts >= $1
"""


async def check_bars_against_ticks(dsn: str, schema: str, since: dt.datetime) -> tuple[int, int]:
    """``(bars checked, bars that differ from their ticks)`` for 1-minute bars written since ``since``."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(_CHECK_BARS_SQL.format(schema=schema), since)
        return int(row["checked"]), int(row["differ"])
    finally:
        await conn.close()


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


class SchemaLock:
    """A PostgreSQL advisory lock on a schema for the demo's lifetime, so two demos never share
    (and reset) one schema. A thread with its own event loop keeps the locking session open."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn, self.schema = dsn, schema
        self._acquired = threading.Event()
        self._release = threading.Event()
        self._ok = False
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold()), name="demo-schema-lock",
                                        daemon=True)

    async def _hold(self) -> None:
        try:
            conn = await asyncpg.connect(self.dsn)
        except Exception:  # noqa: BLE001 - migrate reports a dead database with a better message
            self._ok = True
            self._acquired.set()
            return
        try:
            self._ok = await conn.fetchval("SELECT pg_try_advisory_lock(7391, hashtext($1))", self.schema)
            self._acquired.set()
            if self._ok:
                await asyncio.to_thread(self._release.wait)
        finally:
            await conn.close()

    def acquire(self, timeout: float = 15.0) -> bool:
        self._thread.start()
        self._acquired.wait(timeout)
        return self._ok

    def release(self) -> None:
        self._release.set()
        if self._thread.is_alive():
            self._thread.join(5)
