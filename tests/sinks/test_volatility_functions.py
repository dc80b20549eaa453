"""The volatility analysts' SQL functions (migration 0011) against the real PostgreSQL, each checked against
the base tables with a plain recomputation here (filter, sort, take the last, add)."""

from __future__ import annotations

import datetime as dt

import asyncpg
import numpy as np
import pytest

from pipeline.records.rollups import (
    CHAIN_BAR_DTYPE,
    STRIKE_BAR_DTYPE,
    VOL_INDEX_DTYPE,
    rows_of,
)
from sinks.timescale_writer import TimescaleWriter

pytestmark = pytest.mark.integration

UTC = dt.timezone.utc
EXPIRIES = [dt.date(2030, 1, 9), dt.date(2030, 1, 16), dt.date(2030, 1, 30)]  # the first expires on day 0
STRIKES = [21000.0 + 100 * i for i in range(11)]
T0 = dt.datetime(2030, 1, 9, 3, 45, tzinfo=UTC)  # 09:15 IST on the first expiry's day
BUCKETS = [T0 + dt.timedelta(minutes=i) for i in range(30)]
QUALITY = ("strikes_quoted", "parity_violations", "crossed_quotes", "butterfly_violations")


def _data(seed: int = 11) -> tuple[list[dict], list[dict], list[dict]]:
    """Strike rows (one expiry), chain rows (every expiry, some buckets missing) and volatility index rows."""
    rng = np.random.default_rng(seed)
    strike_rows, chain_rows, vix_rows = [], [], []
    for n, bucket in enumerate(BUCKETS):
        recv = int(bucket.timestamp() * 1e6) + 59_000_000
        for k in STRIKES:
            row = {"underlying": "NIFTY", "expiry": EXPIRIES[1], "strike": k, "bucket": bucket, "forward": 21500.0,
                   "last_recv_ts": recv}
            for side, sign in (("call", 1), ("put", -1)):
                known = rng.random() < 0.8  # a side with no OI known has a NULL gex
                row[f"{side}_gex"] = sign * float(rng.uniform(0, 1e9)) if known else None
            strike_rows.append(row)
        for e, expiry in enumerate(EXPIRIES):
            if rng.random() < 0.2:
                continue  # no row of this expiry in this bucket: the term structure takes an older one
            chain_rows.append({"underlying": "NIFTY", "expiry": expiry, "bucket": bucket, "forward": 21500.0 + e,
                               "atm_iv": float(rng.uniform(0.1, 0.2)), "rr25": float(rng.normal(0, 0.02)),
                               "bf25": float(rng.uniform(0, 0.01)), "gex": float(rng.normal(0, 1e10)),
                               "gex_flip": float(rng.uniform(21000, 22000)) if rng.random() < 0.7 else None,
                               "total_call_oi": 1, "total_put_oi": 1, "strikes_listed": len(STRIKES),
                               "strikes_covered": len(STRIKES), "last_recv_ts": recv,
                               **{name: int(rng.integers(0, 6)) for name in QUALITY}})
        if n % 3:
            vix_rows.append({"underlying": "NIFTY", "bucket": bucket, "vix": float(rng.uniform(10, 20)),
                             "near_expiry": EXPIRIES[1], "next_expiry": EXPIRIES[2],
                             "near_variance": 0.02, "next_variance": 0.025, "forward_near": 21500.0,
                             "forward_next": 21510.0, "strikes_used_near": 9, "strikes_used_next": 10,
                             "last_recv_ts": recv})
    return strike_rows, chain_rows, vix_rows


@pytest.fixture
async def loaded(pool: asyncpg.Pool, pg_schema: str):  # noqa: ANN201
    strike_rows, chain_rows, vix_rows = _data()
    writer = TimescaleWriter(pool, pg_schema)
    await writer.write_strike_bars(60, rows_of(STRIKE_BAR_DTYPE, 60, strike_rows))
    await writer.write_chain_bars(60, rows_of(CHAIN_BAR_DTYPE, 60, chain_rows))
    await writer.write_vol_index(60, rows_of(VOL_INDEX_DTYPE, 60, vix_rows))
    return pool, pg_schema, strike_rows, chain_rows, vix_rows


async def test_skew_gex_and_quality_series_are_one_expirys_chain_rows_in_order(loaded) -> None:
    pool, schema, _, chain_rows, _ = loaded
    lo, hi = BUCKETS[5], BUCKETS[20]
    want = [c for c in sorted(chain_rows, key=lambda c: c["bucket"])
            if c["expiry"] == EXPIRIES[2] and lo <= c["bucket"] <= hi]
    assert len(want) > 5
    skew = await pool.fetch(f'SELECT * FROM "{schema}".skew_series($1, $2, $3, $4)', "NIFTY", EXPIRIES[2], lo, hi)
    assert [(r["bucket"], r["atm_iv"], r["rr25"], r["bf25"], r["forward"]) for r in skew] == [
        (c["bucket"], c["atm_iv"], c["rr25"], c["bf25"], c["forward"]) for c in want]
    gex = await pool.fetch(f'SELECT * FROM "{schema}".gex_series($1, $2, $3, $4, $5)', "NIFTY", EXPIRIES[2], lo, hi, "1m")
    assert [(r["bucket"], r["gex"], r["gex_flip"]) for r in gex] == [(c["bucket"], c["gex"], c["gex_flip"]) for c in want]
    quality = await pool.fetch(f'SELECT * FROM "{schema}".chain_quality_series($1, $2, $3, $4)', "NIFTY", EXPIRIES[2],
                               lo, hi)
    assert [tuple(r[n] for n in ("bucket", *QUALITY)) for r in quality] == [
        tuple(c[n] for n in ("bucket", *QUALITY)) for c in want]


async def test_term_structure_is_each_live_expirys_newest_row_at_or_before(loaded) -> None:
    pool, schema, _, chain_rows, _ = loaded
    at = BUCKETS[17] + dt.timedelta(seconds=30)
    got = await pool.fetch(f'SELECT * FROM "{schema}".term_structure($1, $2)', "NIFTY", at)
    want = []
    for expiry in EXPIRIES:  # every expiry here is on or after the day of "at" (IST)
        rows = sorted((c for c in chain_rows if c["expiry"] == expiry and c["bucket"] <= at), key=lambda c: c["bucket"])
        want.append((expiry, rows[-1]["bucket"], rows[-1]["atm_iv"], rows[-1]["rr25"]))
    assert [(r["expiry"], r["bucket"], r["atm_iv"], r["rr25"]) for r in got] == want
    next_day = await pool.fetch(f'SELECT expiry FROM "{schema}".term_structure($1, $2)', "NIFTY",
                                at + dt.timedelta(days=1))
    assert [r["expiry"] for r in next_day] == EXPIRIES[1:]  # the expired one leaves the curve


async def test_gex_by_strike_sums_the_sides_of_the_last_bucket_and_adds_up_to_the_chain(loaded) -> None:
    pool, schema, strike_rows, _, _ = loaded
    at = BUCKETS[12] + dt.timedelta(seconds=5)
    got = await pool.fetch(f'SELECT * FROM "{schema}".gex_by_strike($1, $2, $3)', "NIFTY", EXPIRIES[1], at)
    want = sorted((r for r in strike_rows if r["bucket"] == BUCKETS[12]), key=lambda r: r["strike"])
    assert [r["strike"] for r in got] == STRIKES
    for g, w in zip(got, want, strict=True):
        sides = [v for v in (w["call_gex"], w["put_gex"]) if v is not None]
        assert (g["call_gex"], g["put_gex"], g["bucket"]) == (w["call_gex"], w["put_gex"], BUCKETS[12])
        assert g["gex"] == (pytest.approx(sum(sides)) if sides else None)


async def test_vol_index_series_is_the_index_rows_in_range(loaded) -> None:
    pool, schema, _, _, vix_rows = loaded
    got = await pool.fetch(f'SELECT * FROM "{schema}".vol_index_series($1, $2, $3)', "NIFTY", BUCKETS[3], BUCKETS[9])
    want = [v for v in vix_rows if BUCKETS[3] <= v["bucket"] <= BUCKETS[9]]
    assert [(r["bucket"], r["vix"], r["near_expiry"], r["strikes_used_next"]) for r in got] == [
        (v["bucket"], v["vix"], v["near_expiry"], v["strikes_used_next"]) for v in want]
    assert await pool.fetch(f'SELECT * FROM "{schema}".vol_index_series($1, $2, $3)', "BANKNIFTY",
                            BUCKETS[0], BUCKETS[-1]) == []


@pytest.mark.parametrize("call", [
    "skew_series('NIFTY', '2030-01-30', now(), now(), '2m')",
    "term_structure('NIFTY', now(), 'daily')",
    "gex_by_strike('NIFTY', '2030-01-30', now(), '')",
    "vol_index_series('NIFTY', now(), now(), NULL)",
])
async def test_bad_timeframe_raises_an_error_naming_the_allowed_values(pool, pg_schema, call: str) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InvalidParameterValueError, match="use one of 1m, 5m, 15m"):
            await conn.fetch(f'SELECT * FROM "{pg_schema}".{call}')
