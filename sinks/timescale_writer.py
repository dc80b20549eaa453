"""Idempotent bulk writes into PostgreSQL/TimescaleDB.

Every write is one transaction on one pooled connection:

1. Binary ``COPY`` of the batch into a session-local staging table (``CREATE
   TEMP TABLE IF NOT EXISTS .. ON COMMIT DELETE ROWS``) whose columns are the
   raw numpy columns (epoch seconds/microseconds as bigint, floats with NaN):
   bars, ticks and rollups as one numpy-built payload (``sinks.pg_copy``; a
   rollup's text and date columns as positions in a list sent with the
   statement), instruments as records.
2. One ``INSERT .. SELECT .. ON CONFLICT`` from the staging table into the real
   table, converting in SQL: epoch seconds -> ``timestamptz`` (UTC), epoch
   microseconds -> ``timestamptz`` (exact, integer arithmetic), NaN -> NULL.

Versioning (bars): a bar's versions only ever gain ticks (late ticks add to it,
redeliveries are deduplicated upstream), so the most ticks wins, then the newest
``last_recv_ts``: ``SELECT DISTINCT ON (key) .. ORDER BY key, tick_count DESC,
last_recv_ts DESC`` inside the batch, and ``ON CONFLICT (key) DO UPDATE .. WHERE
EXCLUDED.tick_count > t.tick_count OR (EXCLUDED.tick_count = t.tick_count AND
EXCLUDED.last_recv_ts >= t.last_recv_ts)`` across batches. So a replay rewrites
identical rows; an older redelivery never overwrites a late-corrected bar; a bar
re-emitted because its volume baseline moved (same ticks, newer version) replaces
it; and what a restarted worker emits from partial knowledge never overwrites the
complete bar: the "warm-up" bar of a bucket it replays from the middle (fewer
ticks) or a late tick for a bucket older than its replay (one tick, newer version).
Rollup rows (strike/chain bars) have no tick count: for them an equal or newer
``last_recv_ts`` replaces (``>=``).

Ticks are immutable (``ON CONFLICT (instrument_token, recv_ts) DO NOTHING``);
instruments upsert on ``instrument_token``.

Errors (connection refused, lost connection, missing tables) propagate to the
caller, which retries with backoff and does not commit Kafka offsets. Nothing
here logs a DSN.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import asyncpg
import numpy as np

from pipeline.records.bars import BAR_DTYPE
from pipeline.records.rollups import (
    CHAIN_BAR_DTYPE,
    MISSING_INT,
    STRIKE_BAR_DTYPE,
    VOL_INDEX_DTYPE,
)
from pipeline.records.ticks import PRICED_TICK_DTYPE
from pipeline.records.time_units import label_of, parse_date
from sinks.migrate import check_schema_name, quote_ident
from sinks.pg_copy import binary_copy
from sinks.table_columns import (
    BAR_COLUMNS,
    BAR_TABLES,
    CHAIN_COLUMNS,
    EPOCH_S_SQL,
    EPOCH_US_SQL,
    FLOAT_SQL,
    INSTRUMENT_COLUMNS,
    STRIKE_COLUMNS,
    TICK_COLUMNS,
    VOL_INDEX_COLUMNS,
)

_STAGE_BARS, _STAGE_TICKS = "_strikeflow_stage_bars", "_strikeflow_stage_ticks"
_STAGE_INSTRUMENTS = "_strikeflow_stage_instruments"


def newest_versions(bars: np.ndarray) -> np.ndarray:
    """One row per (instrument_token, bucket): the most ticks, then the newest ``last_recv_ts``, then the
    one emitted last (a correction of only the volume keeps the version of the bar it corrects)."""
    if len(bars) <= 1:
        return bars
    order = np.lexsort((np.arange(len(bars)), bars["last_recv_ts"], bars["tick_count"], bars["bucket"],
                        bars["instrument_token"]))
    ranked = bars[order]
    last = np.ones(len(ranked), bool)
    last[:-1] = (ranked["instrument_token"][1:] != ranked["instrument_token"][:-1]) | (
        ranked["bucket"][1:] != ranked["bucket"][:-1])
    return ranked[last]


def _stage_ddl(table: str, columns: Iterable[tuple[str, str]]) -> str:
    cols = ", ".join(f"{name} {sqltype}" for name, sqltype in columns)
    return f"CREATE TEMP TABLE IF NOT EXISTS {table} ({cols}) ON COMMIT DELETE ROWS"


def bars_upsert_sql(schema: str, table: str, source: str = "live") -> str:
    """The INSERT .. SELECT DISTINCT ON .. ON CONFLICT statement for one bars table. ``source``
    'historical' (a backfill) inserts only where no bar exists; a live bar replaces a historical one
    (its tick_count, 0, is always lower)."""
    target = f"{quote_ident(check_schema_name(schema))}.{table}"
    cols = ", ".join(c[2] for c in BAR_COLUMNS)
    exprs = ",\n       ".join(c[3] for c in BAR_COLUMNS)
    updates = ",\n    ".join(f"{c[2]} = EXCLUDED.{c[2]}" for c in BAR_COLUMNS if c[2] not in ("instrument_token", "bucket"))
    conflict = "DO NOTHING" if source == "historical" else (
        f"DO UPDATE SET\n    {updates},\n    source = EXCLUDED.source\n"
        f"WHERE EXCLUDED.tick_count > t.tick_count\n"
        f"   OR (EXCLUDED.tick_count = t.tick_count AND EXCLUDED.last_recv_ts >= t.last_recv_ts)")
    return (
        f"INSERT INTO {target} AS t ({cols}, source)\n"
        f"SELECT DISTINCT ON (s.instrument_token, s.bucket)\n       {exprs}, {source!r}\n"
        f"FROM {_STAGE_BARS} s\n"
        f"ORDER BY s.instrument_token, s.bucket, s.tick_count DESC, s.last_recv_ts DESC\n"
        f"ON CONFLICT (instrument_token, bucket) {conflict}"
    )


def ticks_insert_sql(schema: str) -> str:
    target = f"{quote_ident(check_schema_name(schema))}.ticks"
    cols = ", ".join(c[2] for c in TICK_COLUMNS)
    exprs = ",\n       ".join(c[3] for c in TICK_COLUMNS)
    return (
        f"INSERT INTO {target} ({cols})\n"
        f"SELECT {exprs}\n"
        f"FROM {_STAGE_TICKS} s\n"
        f"ON CONFLICT (instrument_token, recv_ts) DO NOTHING"
    )


def instruments_upsert_sql(schema: str) -> str:
    target = f"{quote_ident(check_schema_name(schema))}.instruments"
    cols = ", ".join(c[0] for c in INSTRUMENT_COLUMNS)
    updates = ", ".join(f"{c[0]} = EXCLUDED.{c[0]}" for c in INSTRUMENT_COLUMNS if c[0] != "instrument_token")
    return (
        f"INSERT INTO {target} AS t ({cols}, updated_at)\n"
        f"SELECT {cols}, now() FROM {_STAGE_INSTRUMENTS}\n"
        f"ON CONFLICT (instrument_token) DO UPDATE SET {updates}, updated_at = now()"
    )


def _rowcount(status: str) -> int:
    """``'INSERT 0 12'`` -> 12."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, AttributeError):
        return 0


def _opt_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    out = float(value)
    return None if out != out else out


def _opt_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return int(value)


def _opt_str(value: Any) -> str | None:  # "" (a build-up label that does not apply) is None
    if isinstance(value, bytes):
        value = value.decode()
    return None if value is None or value == "" else str(value)


def instrument_record(row: Mapping[str, Any]) -> tuple:
    """A Kite instrument dict (``KiteConnect.instruments()``) -> staging record."""
    return (
        int(row["instrument_token"]),
        _opt_str(row.get("exchange_token")),
        str(row.get("tradingsymbol") or ""),
        _opt_str(row.get("name")),
        parse_date(row.get("expiry")),
        _opt_float(row.get("strike")),
        _opt_float(row.get("tick_size")),
        _opt_int(row.get("lot_size")),
        _opt_str(row.get("instrument_type")),
        _opt_str(row.get("segment")),
        _opt_str(row.get("exchange")),
        _opt_float(row.get("last_price")),
    )


def _rollup_table(prefix: str, interval_s: int) -> str:
    interval_s = int(interval_s)
    if interval_s not in BAR_TABLES:
        raise ValueError(f"no {prefix} table for interval {interval_s}s (supported: {sorted(BAR_TABLES)})")
    return f"{prefix}_{label_of(interval_s)}"


class TimescaleWriter:
    """Bulk upserts on an ``asyncpg.Pool`` (an ``asyncpg.Connection`` works too)."""

    def __init__(self, pool: asyncpg.Pool, schema: str = "public") -> None:
        self.pool = pool
        self.schema = check_schema_name(schema)
        self._bars_sql = {interval: bars_upsert_sql(schema, table) for interval, table in BAR_TABLES.items()}
        self._ticks_sql = ticks_insert_sql(schema)
        self._instruments_sql = instruments_upsert_sql(schema)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if hasattr(self.pool, "acquire"):
            async with self.pool.acquire() as conn:
                yield conn
        else:
            yield self.pool

    async def _stage_and_insert(self, stage: str, ddl: str, names: list[str], records: list[tuple], sql: str) -> int:
        async with self._connection() as conn, conn.transaction():
            await conn.execute(ddl)
            await conn.copy_records_to_table(stage, records=records, columns=names)
            status = await conn.execute(sql)
        return _rowcount(status)

    async def _copy_and_insert(self, stage: str, columns: list[tuple[str, str]], payload: bytes, sql: str,
                               *args: Any) -> int:
        """``_stage_and_insert`` for a binary COPY payload (``sinks.pg_copy``) instead of records; ``args`` are
        the statement's parameters."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute(_stage_ddl(stage, columns))
            await conn.copy_to_table(stage, source=io.BytesIO(payload), columns=[c[0] for c in columns],
                                     format="binary")
            status = await conn.execute(sql, *args)
        return _rowcount(status)

    async def write_bars(self, interval_s: int, bars: np.ndarray, source: str = "live") -> int:
        """Upsert closed bars (BAR_DTYPE) into bars_1m/5m/15m; returns rows inserted or updated.
        ``source='historical'``: backfilled bars, inserted only where no bar exists."""
        interval_s = int(interval_s)
        if interval_s not in BAR_TABLES:
            raise ValueError(f"no bars table for interval {interval_s}s (supported: {sorted(BAR_TABLES)})")
        if bars.dtype != BAR_DTYPE:
            raise ValueError(f"write_bars needs a BAR_DTYPE array, got {bars.dtype}")
        if len(bars) == 0:
            return 0
        if np.any(bars["interval_s"] != interval_s):
            raise ValueError(f"bars of other intervals in a write_bars({interval_s}) batch")
        staged = [(c[0], c[1]) for c in BAR_COLUMNS]
        if source not in ("live", "historical"):
            raise ValueError(f"bar source is 'live' or 'historical', not {source!r}")
        sql = self._bars_sql[interval_s] if source == "live" else \
            bars_upsert_sql(self.schema, BAR_TABLES[interval_s], source)
        return await self._copy_and_insert(_STAGE_BARS, staged, binary_copy(newest_versions(bars), staged), sql)

    async def write_ticks(self, ticks: np.ndarray, record_recv_ts: np.ndarray | None = None) -> int:
        """Insert priced ticks (PRICED_TICK_DTYPE); replays are ignored. Returns rows inserted.
        ``record_recv_ts``: per tick, the ``recv_ts`` of its record's first tick (``record_starts``);
        None: ``ticks`` is one record."""
        if ticks.dtype != PRICED_TICK_DTYPE:
            raise ValueError(f"write_ticks needs a PRICED_TICK_DTYPE array, got {ticks.dtype}")
        if len(ticks) == 0:
            return 0
        if record_recv_ts is None:
            record_recv_ts = np.full(len(ticks), ticks["recv_ts"].min())
        staged = [(c[0], c[1]) for c in TICK_COLUMNS]
        payload = binary_copy(ticks, staged, {"record_recv_ts": record_recv_ts})
        return await self._copy_and_insert(_STAGE_TICKS, staged, payload, self._ticks_sql)

    async def write_instruments(self, rows: list[Mapping[str, Any]]) -> int:
        """Upsert Kite instrument dicts on instrument_token (the last row of a duplicated token wins)."""
        by_token = {}
        for row in rows:
            record = instrument_record(row)
            by_token[record[0]] = record
        if not by_token:
            return 0
        ddl = _stage_ddl(_STAGE_INSTRUMENTS, INSTRUMENT_COLUMNS)
        return await self._stage_and_insert(_STAGE_INSTRUMENTS, ddl, [c[0] for c in INSTRUMENT_COLUMNS],
                                            list(by_token.values()), self._instruments_sql)

    async def write_strike_bars(self, interval_s: int, rows: np.ndarray) -> int:
        """Upsert per-strike rollups (STRIKE_BAR_DTYPE, one interval) into strike_bars_1m/5m/15m (an equal or
        newer ``last_recv_ts`` replaces); returns rows inserted or updated."""
        return await self._write_rollup("strike_bars", interval_s, STRIKE_BAR_DTYPE, STRIKE_COLUMNS,
                                        ("underlying", "expiry", "strike", "bucket"), rows)

    async def write_chain_bars(self, interval_s: int, rows: np.ndarray) -> int:
        """Upsert per-expiry rollups (CHAIN_BAR_DTYPE, one interval) into chain_bars_1m/5m/15m."""
        return await self._write_rollup("chain_bars", interval_s, CHAIN_BAR_DTYPE, CHAIN_COLUMNS,
                                        ("underlying", "expiry", "bucket"), rows)

    async def write_vol_index(self, interval_s: int, rows: np.ndarray) -> int:
        """Upsert volatility index rows (VOL_INDEX_DTYPE, one interval) into vol_index_1m/5m/15m."""
        return await self._write_rollup("vol_index", interval_s, VOL_INDEX_DTYPE, VOL_INDEX_COLUMNS,
                                        ("underlying", "bucket"), rows)

    async def _write_rollup(self, prefix: str, interval_s: int, dtype: np.dtype, columns: list[tuple[str, str]],
                            key: tuple[str, ...], rows: np.ndarray) -> int:
        """Binary COPY of ``rows`` into a staging table of numbers (``rollup_stage``), then one upsert that
        converts them (``rollup_upsert_sql``)."""
        table = _rollup_table(prefix, interval_s)
        if rows.dtype != dtype:
            raise ValueError(f"{table} rows must be {dtype.names[:3]}... ({prefix} rows), got {rows.dtype}")
        if np.any(rows["interval_s"] != interval_s):
            raise ValueError(f"rows of other intervals in a {table} batch")
        if not len(rows):
            return 0
        staged, labels = rollup_stage(rows, columns)
        stage = f"_strikeflow_stage_{prefix}"
        stage_columns = [(name, sqltype) for name, sqltype, _ in staged]
        payload = binary_copy(rows, stage_columns, {name: values for name, _, values in staged if values is not None})
        return await self._copy_and_insert(stage, stage_columns, payload,
                                           rollup_upsert_sql(self.schema, table, stage, columns, key), *labels)


def rollup_stage(rows: np.ndarray, columns: list[tuple[str, str]]
                 ) -> tuple[list[tuple[str, str, np.ndarray | None]], list[list[str]]]:
    """How rollup ``rows`` are staged: every column as a number (text and date columns as the 1-based position
    of their value in a list passed with the statement, one list per such column, in column order); per staged
    column (name, staging SQL type, values or None to take the field as it is), and the lists."""
    staged: list[tuple[str, str, np.ndarray | None]] = []
    labels: list[list[str]] = []
    for name, sqltype in columns:
        if sqltype in ("text", "date"):
            values, codes = np.unique(rows[name], return_inverse=True)
            labels.append([v.decode() for v in values.tolist()])
            staged.append((name, "integer", codes.reshape(-1).astype(np.int32) + 1))
        elif sqltype == "timestamptz":
            staged.append((name, "bigint", None))
        else:
            staged.append((name, sqltype, None))
    return staged, labels


def rollup_upsert_sql(schema: str, table: str, stage: str, columns: list[tuple[str, str]],
                      key: tuple[str, ...]) -> str:
    """INSERT .. SELECT DISTINCT ON (key) .. ON CONFLICT for a rollup table from its numeric staging table
    (``rollup_stage``): labels looked up in the statement's text arrays ('' -> NULL), epoch seconds (``bucket``)
    and microseconds (``last_recv_ts``) -> timestamptz, NaN and ``MISSING_INT`` -> NULL; per key the newest
    ``last_recv_ts`` wins, and an equal or newer one replaces the stored row."""
    exprs, n = [], 0
    for name, sqltype in columns:
        if sqltype in ("text", "date"):
            n += 1
            exprs.append(f"NULLIF((${n}::text[])[s.{name}], '')" + ("::date" if sqltype == "date" else ""))
        elif sqltype == "timestamptz":
            exprs.append((EPOCH_US_SQL if name == "last_recv_ts" else EPOCH_S_SQL).format(col=name))
        elif sqltype == "float8":
            exprs.append(FLOAT_SQL.format(col=name))
        else:
            exprs.append(f"NULLIF(s.{name}, {MISSING_INT})")
    names = [c[0] for c in columns]
    key_sql = ", ".join(key)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in names if c not in key)
    return (
        f"INSERT INTO {quote_ident(check_schema_name(schema))}.{table} AS t ({', '.join(names)})\n"
        f"SELECT DISTINCT ON ({key_sql}) * FROM (SELECT {', '.join(f'{e} AS {c}' for e, c in zip(exprs, names, strict=True))}"
        f" FROM {stage} s) staged\n"
        f"ORDER BY {key_sql}, last_recv_ts DESC\n"
        f"ON CONFLICT ({key_sql}) DO UPDATE SET {updates}\n"
        f"WHERE EXCLUDED.last_recv_ts >= t.last_recv_ts"
    )


__all__ = [
    "BAR_TABLES",
    "newest_versions",
    "TimescaleWriter",
    "bars_upsert_sql",
    "instrument_record",
    "instruments_upsert_sql",
    "rollup_stage",
    "rollup_upsert_sql",
    "ticks_insert_sql",
]
