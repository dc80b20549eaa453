"""Idempotent bulk writes into PostgreSQL/TimescaleDB.

Every write is one transaction on one pooled connection:

1. Binary ``COPY`` of the batch into a session-local staging table (``CREATE
   TEMP TABLE IF NOT EXISTS .. ON COMMIT DELETE ROWS``) whose columns are the
   raw numpy columns (epoch seconds/microseconds as bigint, floats with NaN):
   bars and ticks as one numpy-built payload (``sinks.pg_copy``), rollups and
   instruments as records.
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
import datetime as dt
import io
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

from pipeline.records.bars import BAR_DTYPE
from pipeline.records.rollups import row_dicts
from pipeline.records.ticks import PRICED_TICK_DTYPE
from pipeline.records.time_units import label_of, parse_date
from sinks.migrate import check_schema_name, quote_ident
from sinks.pg_copy import binary_copy
from sinks.table_columns import (
    BAR_COLUMNS,
    BAR_TABLES,
    CHAIN_COLUMNS,
    INSTRUMENT_COLUMNS,
    STRIKE_COLUMNS,
    TICK_COLUMNS,
    VOL_INDEX_COLUMNS,
)

_UTC, _EPOCH = dt.timezone.utc, dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

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


def _iter_rows(rows: Any) -> Iterable[Mapping[str, Any]]:
    if isinstance(rows, np.ndarray):
        names = rows.dtype.names or ()
        return [dict(zip(names, values, strict=True)) for values in rows.tolist()]
    return rows


def _as_ts(value: Any, unit_us: bool) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_UTC)
    if isinstance(value, np.datetime64):
        return _EPOCH + dt.timedelta(microseconds=int(value.astype("datetime64[us]").astype(np.int64)))
    value = int(value)
    return _EPOCH + (dt.timedelta(microseconds=value) if unit_us else dt.timedelta(seconds=value))


def _rollup_record(row: Mapping[str, Any], columns: list[tuple[str, str]]) -> tuple:
    out = []
    for name, sqltype in columns:
        value = row.get(name)
        if name == "bucket":
            value = _as_ts(value, unit_us=False)
        elif name == "last_recv_ts":
            value = _as_ts(value, unit_us=True)
        elif sqltype == "date":
            value = value.decode() if isinstance(value, bytes) else value
            value = parse_date(value)
        elif sqltype == "float8":
            value = _opt_float(value)
        elif sqltype == "bigint":
            value = _opt_int(value)
        else:
            value = _opt_str(value)
        out.append(value)
    return tuple(out)


@dataclass(frozen=True)
class SinkBatch:
    """One unit for ``TimescaleWriter.write``.

    kind: ``"bars"`` (``data`` a BAR_DTYPE array; ``interval_s`` 60/300/900, or
    None to split by the array's own ``interval_s`` column), ``"ticks"``
    (PRICED_TICK_DTYPE array), ``"instruments"`` (list of Kite instrument dicts),
    ``"strike_bars"``/``"chain_bars"`` (rows as ``write_strike_bars``; ``interval_s`` required).
    """

    kind: str
    data: Any
    interval_s: int | None = None


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

    async def _copy_and_insert(self, stage: str, columns: list[tuple[str, str]], payload: bytes, sql: str) -> int:
        """``_stage_and_insert`` for a binary COPY payload (``sinks.pg_copy``) instead of records."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute(_stage_ddl(stage, columns))
            await conn.copy_to_table(stage, source=io.BytesIO(payload), columns=[c[0] for c in columns],
                                     format="binary")
            status = await conn.execute(sql)
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

    async def write_strike_bars(self, interval_s: int, rows: Any) -> int:
        """Upsert per-strike rollups into strike_bars_1m/5m/15m (newest ``last_recv_ts`` wins).

        ``rows``: a structured array or a list of mappings with the table's columns
        (``underlying``, ``expiry`` date/ISO string/datetime64, ``strike``, ``bucket`` epoch s or
        datetime, ``last_recv_ts`` epoch µs or datetime, optional ``forward`` and
        ``call_``/``put_`` ``close, volume, oi, oi_change, iv, delta``; missing/NaN -> NULL).
        """
        return await self._write_rollup(_rollup_table("strike_bars", interval_s), STRIKE_COLUMNS,
                                        ("underlying", "expiry", "strike", "bucket"), rows)

    async def write_chain_bars(self, interval_s: int, rows: Any) -> int:
        """Upsert per-expiry rollups into chain_bars_1m/5m/15m (columns as the table; see write_strike_bars)."""
        return await self._write_rollup(_rollup_table("chain_bars", interval_s), CHAIN_COLUMNS,
                                        ("underlying", "expiry", "bucket"), rows)

    async def write_vol_index(self, interval_s: int, rows: Any) -> int:
        """Upsert volatility index rows (``VOL_INDEX_DTYPE`` or mappings) into vol_index_1m/5m/15m."""
        return await self._write_rollup(_rollup_table("vol_index", interval_s), VOL_INDEX_COLUMNS,
                                        ("underlying", "bucket"), rows)

    async def write_rollups(self, strike_rows: np.ndarray, chain_rows: np.ndarray,
                            vol_index_rows: np.ndarray | None = None) -> int:
        """STRIKE_BAR_DTYPE, CHAIN_BAR_DTYPE (and VOL_INDEX_DTYPE) arrays of any intervals, as the process agent
        emits them."""
        total = 0
        parts = [(strike_rows, self.write_strike_bars), (chain_rows, self.write_chain_bars)]
        if vol_index_rows is not None:
            parts.append((vol_index_rows, self.write_vol_index))
        for rows, write in parts:
            for interval in np.unique(rows["interval_s"]).tolist():
                total += await write(interval, row_dicts(rows[rows["interval_s"] == interval]))
        return total

    async def _write_rollup(self, table: str, columns: list[tuple[str, str]], key: tuple[str, ...], rows: Any) -> int:
        records = [_rollup_record(row, columns) for row in _iter_rows(rows)]
        if not records:
            return 0
        stage = f"_strikeflow_stage_{table.rsplit('_', 1)[0]}"
        names = [c[0] for c in columns]
        key_sql = ", ".join(key)
        updates = ", ".join(f"{n} = EXCLUDED.{n}" for n in names if n not in key)
        sql = (
            f"INSERT INTO {quote_ident(self.schema)}.{table} AS t ({', '.join(names)})\n"
            f"SELECT DISTINCT ON ({key_sql}) {', '.join(names)} FROM {stage}\n"
            f"ORDER BY {key_sql}, last_recv_ts DESC\n"
            f"ON CONFLICT ({key_sql}) DO UPDATE SET {updates}\n"
            f"WHERE EXCLUDED.last_recv_ts >= t.last_recv_ts"
        )
        return await self._stage_and_insert(stage, _stage_ddl(stage, columns), names, records, sql)

    async def write(self, batch: SinkBatch | tuple | np.ndarray) -> int:
        """Quix-style entry point. Accepts a ``SinkBatch``; a tuple ``("bars", interval_s, array)``,
        ``("bars", array)``, ``("ticks", array)`` or ``("instruments", rows)``; or a bare BAR_DTYPE /
        PRICED_TICK_DTYPE array. Writes synchronously (the data is in the database on return)."""
        if isinstance(batch, np.ndarray):
            kind = "bars" if batch.dtype == BAR_DTYPE else "ticks" if batch.dtype == PRICED_TICK_DTYPE else None
            if kind is None:
                raise ValueError(f"cannot tell which table a {batch.dtype} array belongs to")
            batch = SinkBatch(kind, batch)
        elif isinstance(batch, tuple):
            if len(batch) == 3:
                batch = SinkBatch(batch[0], batch[2], batch[1])
            elif len(batch) == 2:
                batch = SinkBatch(batch[0], batch[1])
            else:
                raise ValueError("write() tuples are (kind, data) or (kind, interval_s, data)")
        if batch.kind == "bars":
            if batch.interval_s is not None:
                return await self.write_bars(batch.interval_s, batch.data)
            total = 0
            for interval in np.unique(batch.data["interval_s"]).tolist():
                total += await self.write_bars(interval, batch.data[batch.data["interval_s"] == interval])
            return total
        if batch.kind == "ticks":
            return await self.write_ticks(batch.data)
        if batch.kind == "instruments":
            return await self.write_instruments(batch.data)
        if batch.kind in ("strike_bars", "chain_bars"):
            if batch.interval_s is None:
                raise ValueError(f"{batch.kind} batches need interval_s")
            method = self.write_strike_bars if batch.kind == "strike_bars" else self.write_chain_bars
            return await method(batch.interval_s, batch.data)
        raise ValueError(f"unknown sink batch kind {batch.kind!r} (bars, ticks, instruments, strike_bars, chain_bars)")

    async def flush(self) -> None:
        """Nothing is buffered (every write commits before returning); kept for the sink interface."""
        return None


__all__ = [
    "BAR_TABLES",
    "newest_versions",
    "SinkBatch",
    "TimescaleWriter",
    "bars_upsert_sql",
    "instrument_record",
    "instruments_upsert_sql",
    "ticks_insert_sql",
]
