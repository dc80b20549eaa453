"""What the dashboard (``strikeflow web``) reads: the snapshot hashes in Redis and the bar tables in
PostgreSQL. Read-only: nothing here writes.

The chain page is drawn at once from the ``snapshot:<underlying>:<expiry>`` hash (each option's latest
published tick, ``sinks.redis``) and the newest 1-minute chain and volatility index rows; the charts come
from the bar tables. Units as in the tables: ``bucket`` epoch seconds (interval start), prices and strikes
rupees, IVs annualised (0.15 = 15 %), OI and volume in contracts as Kite reports them.

OI change on the page is the option's OI now minus its OI at the start of the session (``oi_open`` of its
first 1-minute bar of the session day, 09:15 IST), the change brokers' chains show.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import orjson

from pipeline.records.time_units import IST
from sinks.migrate import quote_ident
from sinks.redis.channels import Channels

SESSION_OPEN = dt.time(9, 15)
_HEADER_FIELDS = ("bucket", "forward", "atm_strike", "atm_iv", "pcr", "max_pain", "total_call_oi", "total_put_oi",
                  "gex", "gex_flip", "rr25", "bf25", "strikes_quoted", "parity_violations", "crossed_quotes",
                  "butterfly_violations")
_SIDE_FIELDS = ("token", "symbol", "last_price", "iv", "mid_iv", "delta", "oi", "volume", "exchange_ts", "stale")


def _epoch(value: Any) -> Any:
    return int(value.timestamp()) if isinstance(value, dt.datetime) else value


def _row(record: asyncpg.Record | None, fields: tuple[str, ...]) -> dict[str, Any] | None:
    if record is None:
        return None
    return {name: _epoch(record[name]) for name in fields if name in record.keys()}


async def chain_list(pool: asyncpg.Pool, schema: str) -> list[dict[str, Any]]:
    """Every (underlying, expiry) with chain rows, newest bucket first within an underlying."""
    rows = await pool.fetch(f"SELECT underlying, expiry, max(bucket) AS bucket FROM {quote_ident(schema)}.chain_bars_1m "
                            "GROUP BY underlying, expiry ORDER BY underlying, expiry")
    return [{"underlying": r["underlying"], "expiry": r["expiry"].isoformat(), "bucket": _epoch(r["bucket"])}
            for r in rows]


async def snapshot_ticks(redis: Any, channels: Channels, underlying: str, expiry: str) -> list[dict[str, Any]]:
    """The latest published tick of every instrument of the expiry (options and its future) and of the index."""
    out = []
    for key in (channels.snapshot(underlying, expiry), channels.snapshot(underlying, "")):
        for value in (await redis.hgetall(key)).values():
            out.append(orjson.loads(value))
    return out


def session_start(ticks: list[dict[str, Any]]) -> dt.datetime | None:
    """09:15 IST of the day of the newest tick (None without ticks): where the page's OI change counts from."""
    newest = max((t.get("exchange_ts") or 0 for t in ticks), default=0)
    if not newest:
        return None
    day = dt.datetime.fromtimestamp(newest, IST).date()
    return dt.datetime.combine(day, SESSION_OPEN, IST)


async def session_oi_open(pool: asyncpg.Pool, schema: str, tokens: list[int], since: dt.datetime) -> dict[int, int]:
    """Per token, ``oi_open`` of its first 1-minute bar at or after ``since``."""
    rows = await pool.fetch(
        f"SELECT DISTINCT ON (instrument_token) instrument_token, oi_open FROM {quote_ident(schema)}.bars_1m "
        "WHERE instrument_token = ANY($1::bigint[]) AND bucket >= $2 ORDER BY instrument_token, bucket",
        tokens, since)
    return {int(r["instrument_token"]): int(r["oi_open"]) for r in rows if r["oi_open"] is not None}


async def latest_chain_row(pool: asyncpg.Pool, schema: str, underlying: str, expiry: dt.date) -> dict[str, Any] | None:
    row = await pool.fetchrow(f"SELECT * FROM {quote_ident(schema)}.chain_bars_1m WHERE underlying = $1 AND expiry = $2 "
                              "ORDER BY bucket DESC LIMIT 1", underlying, expiry)
    return _row(row, _HEADER_FIELDS)


async def latest_vol_index(pool: asyncpg.Pool, schema: str, underlying: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(f"SELECT bucket, vix, near_expiry, next_expiry FROM {quote_ident(schema)}.vol_index_1m "
                              "WHERE underlying = $1 ORDER BY bucket DESC LIMIT 1", underlying)
    if row is None:
        return None
    return {"bucket": _epoch(row["bucket"]), "vix": row["vix"], "near_expiry": row["near_expiry"].isoformat(),
            "next_expiry": row["next_expiry"].isoformat()}


def chain_table(ticks: list[dict[str, Any]], oi_open: dict[int, int]) -> list[dict[str, Any]]:
    """One row per strike, ascending: ``{"strike", "call", "put"}``, each side the fields of its latest tick
    (``_SIDE_FIELDS``) and ``oi_change`` (None without a session-open OI), or None when not quoted."""
    rows: dict[float, dict[str, Any]] = {}
    for tick in ticks:
        side = {"CE": "call", "PE": "put"}.get(tick.get("type"))
        if side is None or tick.get("strike") is None:
            continue
        entry = {name: tick.get(name) for name in _SIDE_FIELDS}
        base = oi_open.get(int(tick["token"]))
        entry["oi_change"] = None if base is None or tick.get("oi") is None else tick["oi"] - base
        entry["oi_open"] = base
        rows.setdefault(float(tick["strike"]), {"strike": float(tick["strike"]), "call": None, "put": None})[side] = entry
    return [rows[k] for k in sorted(rows)]


async def chain_view(pool: asyncpg.Pool, redis: Any, channels: Channels, schema: str, underlying: str,
                     expiry: dt.date) -> dict[str, Any]:
    """``/api/chain``: the header (newest chain and index rows, forward and spot from the ticks) and the rows."""
    ticks = await snapshot_ticks(redis, channels, underlying, expiry.isoformat())
    start = session_start(ticks)
    tokens = [int(t["token"]) for t in ticks if t.get("type") in ("CE", "PE")]
    oi_open = await session_oi_open(pool, schema, tokens, start) if start is not None and tokens else {}
    spot = next((t.get("last_price") for t in ticks if t.get("type") == "INDEX"), None)
    future = next((t.get("last_price") for t in ticks if t.get("type") == "FUT"), None)
    return {"underlying": underlying, "expiry": expiry.isoformat(), "spot": spot, "future": future,
            "chain": await latest_chain_row(pool, schema, underlying, expiry),
            "vix": await latest_vol_index(pool, schema, underlying),
            "rows": chain_table(ticks, oi_open)}


async def series_view(pool: asyncpg.Pool, schema: str, underlying: str, expiry: dt.date) -> dict[str, Any]:
    """``/api/series``: the session's 1-minute PCR and ATM IV (from ``chain_bars_1m``; the session is the day
    of the newest row) and OI by strike as of the newest ``strike_bars_1m`` bucket."""
    q = quote_ident(schema)
    rows = await pool.fetch(
        f"WITH day AS (SELECT max(bucket) AS b FROM {q}.chain_bars_1m WHERE underlying = $1 AND expiry = $2) "
        f"SELECT c.bucket, c.pcr, c.atm_iv, c.forward FROM {q}.chain_bars_1m c, day "
        "WHERE c.underlying = $1 AND c.expiry = $2 "
        "AND (c.bucket AT TIME ZONE 'Asia/Kolkata')::date = (day.b AT TIME ZONE 'Asia/Kolkata')::date "
        "ORDER BY c.bucket", underlying, expiry)
    oi = await pool.fetch(
        f"WITH last AS (SELECT max(bucket) AS b FROM {q}.strike_bars_1m WHERE underlying = $1 AND expiry = $2) "
        f"SELECT s.strike, s.call_oi, s.put_oi, s.bucket FROM {q}.strike_bars_1m s, last "
        "WHERE s.underlying = $1 AND s.expiry = $2 AND s.bucket = last.b ORDER BY s.strike", underlying, expiry)
    return {"underlying": underlying, "expiry": expiry.isoformat(),
            "bucket": [_epoch(r["bucket"]) for r in rows], "pcr": [r["pcr"] for r in rows],
            "atm_iv": [r["atm_iv"] for r in rows], "forward": [r["forward"] for r in rows],
            "oi_bucket": _epoch(oi[0]["bucket"]) if oi else None,
            "strike": [r["strike"] for r in oi], "call_oi": [r["call_oi"] for r in oi],
            "put_oi": [r["put_oi"] for r in oi]}


__all__ = ["chain_list", "chain_table", "chain_view", "series_view", "session_start", "snapshot_ticks"]
