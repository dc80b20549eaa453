"""Read stored ticks back as the records the live worker processed (for ``strikeflow replay``).

The ``ticks`` table keeps, per tick, ``record_recv_ts``: the receive time of the first tick of the
Kafka record that carried it (migration 0008). Ticks are read ordered by that (the order the records
were produced; one underlying's records are in order) and, inside a record, by receive time
(``recv_ts``, the receive sequence of docs/design.md), and grouped back into those records, so the worker's code sees the
same batches it saw live; that matters because a record's ticks are priced against the book after
the whole record (``pipeline.core.pricing``). Rows stored before 0008 (``record_recv_ts`` NULL) are
grouped by receive millisecond: close to, but not exactly, the live records.

Columns come back as ``TICK_DTYPE`` (``pipeline.records.ticks``): timestamps as epoch seconds and
microseconds (exact integer arithmetic in SQL), NULL prices as NaN, NULL counts as 0, ``mode`` full
(the ingestor produces only full-mode ticks). Read-only; errors propagate to the caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from pipeline.records.ticks import MODE_FULL, TICK_DTYPE
from sinks.migrate import check_schema_name, quote_ident

_SELECT = """
SELECT instrument_token,
       extract(epoch FROM exchange_ts)::bigint,
       (extract(epoch FROM recv_ts) * 1000000)::bigint,
       coalesce(last_price, 'NaN'::float8), coalesce(volume, 0), coalesce(oi, 0),
       coalesce(bid, 'NaN'::float8), coalesce(ask, 'NaN'::float8),
       coalesce(extract(epoch FROM last_trade_ts)::bigint, 0),
       coalesce((extract(epoch FROM record_recv_ts) * 1000000)::bigint,
                (extract(epoch FROM date_trunc('milliseconds', recv_ts)) * 1000000)::bigint)
FROM {table}
WHERE exchange_ts >= to_timestamp($1) AND exchange_ts < to_timestamp($2)
"""

_FIELDS = ("instrument_token", "exchange_ts", "recv_ts", "last_price", "volume", "oi", "bid", "ask", "last_trade_ts")
_ROW_DTYPE = np.dtype([*[(n, TICK_DTYPE[n]) for n in _FIELDS], ("record", "<i8")])


def ticks_range_sql(schema: str) -> str:
    """The query over ``<schema>.ticks`` with ``$1``/``$2`` the exchange-time range [since, until) in epoch s,
    ordered by record (the records of several underlyings interleave in receive order), then receive order."""
    sql = _SELECT.format(table=f"{quote_ident(check_schema_name(schema))}.ticks")
    return sql + "ORDER BY 10, 3, instrument_token"


async def count_ticks(conn: Any, schema: str, since: float, until: float) -> int:
    """Stored ticks with exchange time in [since, until) (epoch s)."""
    table = f"{quote_ident(check_schema_name(schema))}.ticks"
    return int(await conn.fetchval(
        f"SELECT count(*) FROM {table} WHERE exchange_ts >= to_timestamp($1) AND exchange_ts < to_timestamp($2)",
        float(since), float(until)))


def _as_ticks(rows: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    raw = np.array([tuple(r) for r in rows], dtype=_ROW_DTYPE)
    ticks = np.zeros(len(raw), TICK_DTYPE)
    for name in _FIELDS:
        ticks[name] = raw[name]
    ticks["mode"] = MODE_FULL
    return ticks, raw["record"]


async def read_tick_records(conn: Any, schema: str, since: float, until: float,
                            fetch_rows: int = 20_000) -> AsyncIterator[list[np.ndarray]]:
    """The stored ticks with exchange time in [since, until), in receive order, as lists of whole records
    (``TICK_DTYPE`` arrays, one per stored record, in the order they were received); ``conn`` an
    ``asyncpg.Connection`` (the read is one server-side cursor in a read-only transaction)."""
    held_ticks, held_keys = np.empty(0, TICK_DTYPE), np.empty(0, np.int64)
    async with conn.transaction(readonly=True):
        cursor = await conn.cursor(ticks_range_sql(schema), float(since), float(until))
        while True:
            rows = await cursor.fetch(fetch_rows)
            if rows:
                ticks, keys = _as_ticks(rows)
                held_ticks, held_keys = np.concatenate([held_ticks, ticks]), np.concatenate([held_keys, keys])
            # the last record may go on in the next rows: hold it back until the cursor is past it
            cut = len(held_keys) if not rows else _last_record_start(held_keys)
            if cut:
                yield split_records(held_ticks[:cut], held_keys[:cut])
                held_ticks, held_keys = held_ticks[cut:], held_keys[cut:]
            if not rows:
                return


def _last_record_start(keys: np.ndarray) -> int:
    """Index where the run of ``keys`` equal to the last one begins (the last record, possibly partial)."""
    differs = np.flatnonzero(keys != keys[-1])
    return int(differs[-1]) + 1 if len(differs) else 0


def split_records(ticks: np.ndarray, keys: np.ndarray) -> list[np.ndarray]:
    """``ticks`` (ordered by record, then receive order) cut where ``keys`` (record receive times) change:
    one array per record."""
    if not len(ticks):
        return []
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return np.split(ticks, starts[1:])
