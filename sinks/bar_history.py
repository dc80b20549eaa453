"""Read stored bars back: the newest closed bar per instrument, to seed the OI rollups after a restart.

``load_latest_bars`` returns ``BAR_DTYPE`` rows (pipeline.records.bars), converted back
from the bars tables as ``sinks.timescale_writer`` wrote them: ``bucket``
timestamptz -> epoch seconds, ``last_recv_ts`` timestamptz -> epoch
microseconds (exact, integer arithmetic), NULL floats -> NaN, NULL ints -> 0,
``forward_source`` text -> its code, the boolean flags -> 1.0/0.0,
``interval_s`` filled in. Read-only; errors (connection, missing table)
propagate to the caller.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from loguru import logger

from pipeline.records.bars import BAR_DTYPE
from pipeline.records.ticks import FORWARD_SOURCES
from sinks.migrate import check_schema_name, quote_ident
from sinks.timescale_writer import BAR_TABLES

_UTC = dt.timezone.utc
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)
_US = dt.timedelta(microseconds=1)

_SOURCE_CODE = {name: float(code) for code, name in FORWARD_SOURCES.items()}
_COLUMNS = [n for n in BAR_DTYPE.names if n not in ("interval_s", "correction")]  # not table columns


def latest_bars_sql(schema: str, interval_s: int) -> str:
    """``$1``: bigint[] of tokens, ``$2``: timestamptz (exclusive upper bound of ``bucket``)."""
    interval_s = int(interval_s)
    if interval_s not in BAR_TABLES:
        raise ValueError(f"no bars table for interval {interval_s}s (supported: {sorted(BAR_TABLES)})")
    table = f"{quote_ident(check_schema_name(schema))}.{BAR_TABLES[interval_s]}"
    return (
        f"SELECT DISTINCT ON (instrument_token) {', '.join(_COLUMNS)}\n"
        f"FROM {table}\n"
        f"WHERE instrument_token = ANY($1::bigint[]) AND bucket < $2\n"
        f"ORDER BY instrument_token, bucket DESC"
    )


def _epoch_us(value: dt.datetime) -> int:
    return (value - _EPOCH) // _US


async def load_latest_bars(pool_or_conn: Any, schema: str, interval_s: int, tokens: np.ndarray,
                           before_bucket: int) -> np.ndarray:
    """For each of ``tokens``, its newest stored bar of ``interval_s`` with ``bucket < before_bucket``
    (epoch s); ``BAR_DTYPE`` rows sorted by token (tokens with no such bar are absent)."""
    sql = latest_bars_sql(schema, interval_s)
    tokens = np.unique(np.asarray(tokens, dtype=np.int64))
    if len(tokens) == 0:
        return np.empty(0, BAR_DTYPE)
    before = _EPOCH + dt.timedelta(seconds=int(before_bucket))
    return _as_bars(await pool_or_conn.fetch(sql, tokens.tolist(), before), interval_s)


async def load_bars_between(pool_or_conn: Any, schema: str, interval_s: int, tokens: np.ndarray, since: int,
                            until: int) -> np.ndarray:
    """Every stored bar of ``interval_s`` of ``tokens`` with ``since <= bucket < until`` (epoch s), live or
    historical, as ``BAR_DTYPE`` sorted by (bucket, token)."""
    latest_bars_sql(schema, interval_s)  # validates the interval and the schema name
    table = f"{quote_ident(schema)}.{BAR_TABLES[int(interval_s)]}"
    rows = await pool_or_conn.fetch(
        f"SELECT {', '.join(_COLUMNS)} FROM {table} WHERE instrument_token = ANY($1::bigint[]) "
        f"AND bucket >= to_timestamp($2) AND bucket < to_timestamp($3) ORDER BY bucket, instrument_token",
        np.unique(np.asarray(tokens, dtype=np.int64)).tolist(), float(since), float(until))
    return _as_bars(rows, interval_s)


def _as_bars(rows: list[Any], interval_s: int) -> np.ndarray:
    """Rows of the bar columns (``_COLUMNS`` order) -> ``BAR_DTYPE`` (see the module doc)."""
    out = np.zeros(len(rows), BAR_DTYPE)
    if not rows:
        return out
    out["interval_s"] = int(interval_s)
    for i, name in enumerate(_COLUMNS):
        values = [r[i] for r in rows]
        if name == "bucket":
            out[name] = [_epoch_us(v) // 1_000_000 for v in values]
        elif name == "last_recv_ts":
            out[name] = [_epoch_us(v) for v in values]
        elif name == "forward_source":
            out[name] = [_SOURCE_CODE.get(v, np.nan) for v in values]
        elif out.dtype[name].kind == "f":
            out[name] = [np.nan if v is None else v for v in values]
        else:
            out[name] = [0 if v is None else v for v in values]
    return out


class SeedRequest(Protocol):
    """What rollups starting for an underlying need: the newest stored bar of ``interval_s`` (seconds)
    of each of ``tokens`` before bucket ``before`` (epoch s)."""

    interval_s: int
    tokens: np.ndarray
    before: int


class SeedsRollups(Protocol):
    """The engines' seeding seam (``pipeline.core.engines.Engines``): ``seed_requests`` says what an
    underlying's first batch needs, ``seed`` takes the bars loaded for it."""

    def seed_requests(self, underlying: str, ticks: np.ndarray) -> Sequence[SeedRequest]: ...

    def seed(self, underlying: str, interval_s: int, bars: np.ndarray) -> None: ...


async def seed_rollups(engines: SeedsRollups, underlying: str, ticks: np.ndarray, pool: Any, schema: str,
                       timeout_s: float = 10.0) -> None:
    """Before an underlying's first batch: seed its rollups with the newest bar of each option stored in
    ``schema``; a failed or slow query (over ``timeout_s``) leaves them unseeded (logged): it never blocks
    the live path."""
    for request in engines.seed_requests(underlying, ticks):
        try:
            bars = await asyncio.wait_for(
                load_latest_bars(pool, schema, request.interval_s, request.tokens, request.before), timeout_s)
        except Exception as exc:  # noqa: BLE001 - never block the live path on the seed
            logger.warning("{} {}s rollups start unseeded: cannot load stored bars ({}: {})",
                           underlying, request.interval_s, type(exc).__name__, exc)
            continue
        engines.seed(underlying, request.interval_s, bars)


__all__ = ["SeedRequest", "SeedsRollups", "latest_bars_sql", "load_bars_between", "load_latest_bars", "seed_rollups"]
