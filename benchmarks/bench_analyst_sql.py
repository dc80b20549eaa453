"""Benchmark: the analysts' SQL functions over a full trading day of 1-minute data, and bulk bar writes.

Run:  .venv/bin/python benchmarks/bench_analyst_sql.py [--pg DSN] [--calls 200]

1. Loads one underlying and expiry for a whole session into a fresh schema (80 strikes x 2 sides x
   375 minutes: 30,000 strike rows, 375 chain rows, 60,000 option bars, plus the instruments), then
   calls ``strike_distribution`` at random moments and ``moneyness_series`` over the whole day for a
   random metric (5 strikes each side), ``--calls`` times each, and prints p50/p95 per function
   (target: p95 < 50 ms for both). Timed from the client: a round trip on one asyncpg connection.
2. Writes ``--bars`` 1-minute bars through ``TimescaleWriter.write_bars`` in batches of ``--batch``
   and prints bar rows/s (target >= 100,000 rows/s).

The schema is dropped at the end. Figures depend on this machine (2 cores, shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
import uuid

import asyncpg
import numpy as np

from pipeline.commands.local_services import services_for_script
from pipeline.records.bars import BAR_DTYPE
from pipeline.records.rollups import CHAIN_BAR_DTYPE, STRIKE_BAR_DTYPE, rows_of
from sinks.migrate import migrate
from sinks.timescale_writer import TimescaleWriter

EXPIRY = dt.date(2030, 1, 31)
OPEN = int(dt.datetime(2030, 1, 10, 3, 45, tzinfo=dt.timezone.utc).timestamp())  # 09:15 IST
MINUTES, N_STRIKES = 375, 80
METRICS = ("iv", "delta", "gamma", "theta", "vega", "oi", "oi_change", "close", "volume")


def _day(rng: np.random.Generator) -> tuple[list[dict], np.ndarray, np.ndarray, np.ndarray]:
    strikes = 21000.0 + 50.0 * np.arange(N_STRIKES)
    instruments = [{"instrument_token": 500_000 + 2 * i + s, "tradingsymbol": f"NIFTY{k:.0f}{t}", "name": "NIFTY",
                    "expiry": EXPIRY, "strike": k, "instrument_type": t, "segment": "NFO-OPT", "exchange": "NFO"}
                   for i, k in enumerate(strikes) for s, t in enumerate(("CE", "PE"))]
    buckets = OPEN + 60 * np.arange(MINUTES)
    forward = 22_975.0 + np.cumsum(rng.normal(0, 8, MINUTES))
    rows = np.zeros(MINUTES * N_STRIKES, STRIKE_BAR_DTYPE)
    rows["underlying"], rows["expiry"], rows["interval_s"] = b"NIFTY", str(EXPIRY).encode(), 60
    rows["bucket"] = np.repeat(buckets, N_STRIKES)
    rows["strike"] = np.tile(strikes, MINUTES)
    rows["forward"] = np.repeat(forward, N_STRIKES)
    for side in ("call", "put"):
        for name in ("close", "iv", "delta", "mid_iv"):
            rows[f"{side}_{name}"] = rng.uniform(0.01, 500, len(rows))
        for name in ("volume", "oi", "oi_change"):
            rows[f"{side}_{name}"] = rng.integers(0, 10**6, len(rows))
    rows["last_recv_ts"] = (rows["bucket"] + 59) * 1_000_000
    chain = np.zeros(MINUTES, CHAIN_BAR_DTYPE)
    chain["underlying"], chain["expiry"], chain["interval_s"], chain["bucket"] = b"NIFTY", str(EXPIRY).encode(), 60, buckets
    chain["forward"] = forward
    chain["atm_strike"] = strikes[np.abs(strikes[None, :] - forward[:, None]).argmin(axis=1)]
    chain["pcr"], chain["max_pain"] = rng.uniform(0.5, 1.5, MINUTES), chain["atm_strike"]
    chain["last_recv_ts"] = (buckets + 59) * 1_000_000
    tokens = np.array([r["instrument_token"] for r in instruments], dtype=np.uint32)
    bars = _bars(rng, tokens, buckets)
    return instruments, rows, chain, bars


def _bars(rng: np.random.Generator, tokens: np.ndarray, buckets: np.ndarray) -> np.ndarray:
    bars = np.zeros(len(tokens) * len(buckets), BAR_DTYPE)
    bars["instrument_token"] = np.tile(tokens, len(buckets))
    bars["bucket"] = np.repeat(buckets, len(tokens))
    bars["interval_s"] = 60
    for name in ("open", "high", "low", "close", "vwap", "forward", "iv", "delta", "gamma", "theta", "vega", "rho",
                 "spot_delta", "mid_iv"):
        bars[name] = rng.uniform(0.01, 500, len(bars))
    bars["forward_source"], bars["stale"], bars["near_expiry"] = 2.0, 0.0, 0.0
    bars["volume"], bars["oi"] = rng.integers(0, 10**5, len(bars)), rng.integers(0, 10**6, len(bars))
    bars["tick_count"] = rng.integers(1, 200, len(bars))
    bars["last_recv_ts"] = (bars["bucket"] + 59) * 1_000_000
    return bars


def _percentiles(samples: list[float]) -> str:
    ms = np.array(samples) * 1000
    return f"p50 {np.percentile(ms, 50):6.1f} ms  p95 {np.percentile(ms, 95):6.1f} ms  max {ms.max():6.1f} ms"


async def _time_calls(conn: asyncpg.Connection, sql: str, args_of, calls: int) -> list[float]:  # noqa: ANN001
    out = []
    for i in range(calls):
        start = time.perf_counter()
        await conn.fetch(sql, *args_of(i))
        out.append(time.perf_counter() - start)
    return out


async def main(args: argparse.Namespace) -> None:
    schema = f"bench_sql_{uuid.uuid4().hex[:8]}"
    await migrate(args.pg, schema)
    pool = await asyncpg.create_pool(args.pg, min_size=1, max_size=2)
    rng = np.random.default_rng(7)
    try:
        instruments, strike_rows, chain, bars = _day(rng)
        writer = TimescaleWriter(pool, schema)
        await writer.write_instruments(instruments)
        await writer.write_strike_bars(60, rows_of(STRIKE_BAR_DTYPE, 60, strike_rows))
        await writer.write_chain_bars(60, rows_of(CHAIN_BAR_DTYPE, 60, chain))
        await writer.write_bars(60, bars)
        async with pool.acquire() as conn:
            start, end = (dt.datetime.fromtimestamp(t, dt.timezone.utc) for t in (OPEN, OPEN + 60 * (MINUTES - 1)))
            print(f"one trading day: {len(strike_rows):,} strike rows, {len(chain)} chain rows, {len(bars):,} option bars")
            # first as freshly loaded (no statistics: after a replay, a backfill, a new TimescaleDB chunk), then
            # analysed: a plan that depends on the statistics shows as the difference
            for state in ("freshly loaded, not analysed", "after ANALYZE"):
                if state == "after ANALYZE":
                    await conn.execute(f'ANALYZE "{schema}".strike_bars_1m; ANALYZE "{schema}".chain_bars_1m; '
                                       f'ANALYZE "{schema}".bars_1m')
                calls = args.calls if state == "after ANALYZE" else max(args.calls // 10, 5)
                dist = await _time_calls(conn, f'SELECT * FROM "{schema}".strike_distribution($1, $2, $3)',
                                         lambda i: ("NIFTY", EXPIRY, start + dt.timedelta(seconds=int(rng.integers(0, 22_500)))),
                                         calls)
                print(f"[{state}] strike_distribution ({calls} calls): {_percentiles(dist)}")
                money = await _time_calls(conn, f'SELECT * FROM "{schema}".moneyness_series($1, $2, $3, $4, $5)',
                                          lambda i: ("NIFTY", EXPIRY, METRICS[i % len(METRICS)], start, end), calls)
                print(f"[{state}] moneyness_series, whole day, 11 offsets ({calls} calls, metrics in turn): "
                      f"{_percentiles(money)}")
        await _bulk(writer, rng, args)
    finally:
        await pool.close()
        conn = await asyncpg.connect(args.pg)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def _bulk(writer: TimescaleWriter, rng: np.random.Generator, args: argparse.Namespace) -> None:
    tokens = np.arange(1, args.batch // 100 + 1, dtype=np.uint32) + 900_000
    total, elapsed, bucket = 0, 0.0, OPEN + 86_400
    while total < args.bars:
        batch = _bars(rng, tokens, bucket + 60 * np.arange(100))
        start = time.perf_counter()
        await writer.write_bars(60, batch)
        elapsed += time.perf_counter() - start
        total += len(batch)
        bucket += 6000
    print(f"bulk bar writes: {total:,} rows in batches of {args.batch:,}: {total / elapsed:,.0f} rows/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", help="PostgreSQL DSN (default: STRIKEFLOW_PG_DSN, else a private server started for the run)")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--bars", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=50_000)
    args = parser.parse_args()
    with services_for_script(args.pg) as services:
        args.pg = services.pg_dsn
        asyncio.run(main(args))
