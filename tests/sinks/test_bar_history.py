"""sinks.bar_history against the real PostgreSQL: bars written by TimescaleWriter read back exactly."""

from __future__ import annotations

import asyncpg
import numpy as np
import pytest

from pipeline.records.bars import BAR_DTYPE
from pipeline.records.ticks import GREEK_FIELDS
from sinks.bar_history import load_latest_bars
from sinks.timescale_writer import TimescaleWriter

pytestmark = pytest.mark.integration

T0 = 1_900_000_020 // 60 * 60
A, B, C = 2001, 2002, 2003


def _bars(tokens, bucket, interval_s=60, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(tokens)
    out = np.zeros(n, BAR_DTYPE)
    out["instrument_token"] = tokens
    out["interval_s"] = interval_s
    out["bucket"] = bucket
    for name in ("open", "high", "low", "close", "vwap", *GREEK_FIELDS, "mid_iv"):
        out[name] = rng.uniform(-5, 500, n)
    out["forward_source"] = rng.integers(1, 4, n)
    out["stale"] = rng.integers(0, 2, n)
    out["near_expiry"] = rng.integers(0, 2, n)
    for name in ("volume", "oi", "oi_open", "oi_high", "oi_low"):
        out[name] = rng.integers(0, 10**12, n)
    out["tick_count"] = rng.integers(1, 1000, n)
    out["last_recv_ts"] = (bucket + 59) * 1_000_000 + rng.integers(0, 999_999, n)  # microsecond precision
    return out


def _assert_bars_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == BAR_DTYPE and len(got) == len(want)
    for name in BAR_DTYPE.names:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)  # NaN == NaN


async def test_load_latest_bars_round_trip_newest_before_bucket(pool, pg_schema):
    writer = TimescaleWriter(pool, pg_schema)
    old, mid, new = _bars([A, B], T0, seed=1), _bars([A], T0 + 60, seed=2), _bars([A, B], T0 + 120, seed=3)
    mid["iv"] = np.nan  # NULL in the table, NaN back
    mid["vwap"] = np.nan
    for bars in (old, mid, new):
        await writer.write_bars(60, bars)
    await writer.write_bars(300, _bars([A, B], T0 // 300 * 300, interval_s=300, seed=4))  # other interval

    got = await load_latest_bars(pool, pg_schema, 60, np.array([A, B, C]), before_bucket=T0 + 120)
    _assert_bars_equal(got, np.concatenate([mid, old[1:]]))  # A: its T0+60 bar, B: its T0 bar; C: none

    # the bound is exclusive; the newest bar itself below a later bound
    got = await load_latest_bars(pool, pg_schema, 60, np.array([A, B]), before_bucket=T0 + 121)
    _assert_bars_equal(got, new)
    got = await load_latest_bars(pool, pg_schema, 60, np.array([B]), before_bucket=T0 + 120)
    _assert_bars_equal(got, old[1:])
    got = await load_latest_bars(pool, pg_schema, 300, np.array([A, B]), before_bucket=T0 + 900)
    assert (got["interval_s"] == 300).all() and got["instrument_token"].tolist() == [A, B]


async def test_load_latest_bars_none_found_empty_bar_dtype(pool, pg_schema):
    await TimescaleWriter(pool, pg_schema).write_bars(60, _bars([A], T0))
    async with pool.acquire() as conn:  # a connection works as well as a pool
        for tokens, before in (([A], T0), ([C], T0 + 600), ([], T0 + 600)):
            got = await load_latest_bars(conn, pg_schema, 60, np.array(tokens, dtype=np.uint32), before)
            assert got.dtype == BAR_DTYPE and len(got) == 0


async def test_load_latest_bars_missing_table_raises(pg_dsn, pg_schema):
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await load_latest_bars(conn, pg_schema, 60, np.array([A]), T0)
    finally:
        await conn.close()
