"""Size and time of a process-agent checkpoint with ~10,000 instruments (issue: state that recovers in seconds).

Run: ``.venv/bin/python benchmarks/bench_checkpoint.py [--seconds S] [--rate R] [--pg DSN]``.
A simulated market of NIFTY and BANKNIFTY with 5 expiries x 501 strikes x 2 sides
(about 10,000 instruments) trades ``--rate`` ticks per exchange second, liquidity
falling off away from the money, for ``--seconds`` exchange seconds through one
set of engines (1/5/15-minute bars, 60 s late window, rollups); then it
snapshots both underlyings (what one checkpoint of their partition holds),
restores the bytes into fresh engines, and with ``--pg`` saves them into
``worker_checkpoints`` of a scratch schema the way the agent does. It prints the
state held, the checkpoint's bytes and the median time of each step.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import time

import numpy as np

from pipeline.core.checkpoint import FORMAT
from pipeline.core.engines import Engines
from pipeline.core.outputs import EngineConfig
from pipeline.feed.ingestor import split_by_underlying
from pipeline.feed.stamping import ReceiveClock, ticks_from_kite
from pipeline.records.instruments import InstrumentIndex
from sim.market import (
    DEFAULT_UNDERLYINGS,
    Market,
    build_instruments,
    session_start_ts,
)

DAY = dt.date(2026, 11, 25)


def _run(seconds: int, rate: int) -> tuple[Engines, int, float]:
    specs = [DEFAULT_UNDERLYINGS["NIFTY"], DEFAULT_UNDERLYINGS["BANKNIFTY"]]
    rows = build_instruments(specs, DAY, n_expiries=5, strikes_each_side=250)
    index = InstrumentIndex.from_rows(rows)
    market = Market(rows, specs, session_start_ts(DAY), seed=3)
    # liquidity: near the money often, far strikes rarely (weights ~ 1 / (1 + distance in strikes))
    spot = np.array([DEFAULT_UNDERLYINGS[u].spot if u in DEFAULT_UNDERLYINGS else 0 for u in index.underlying])
    step = np.array([DEFAULT_UNDERLYINGS[u].strike_step for u in index.underlying])
    distance = np.where(np.isnan(index.strike), 0, np.abs(np.nan_to_num(index.strike) - spot) / step)
    weight = 1 / (1 + distance)
    weight /= weight.sum()
    engines = Engines(EngineConfig(), index)
    rng, clock, start, n = np.random.default_rng(5), ReceiveClock(), session_start_ts(DAY), 0
    began = time.perf_counter()
    for second in range(seconds):
        market.advance(start + second)
        tokens = np.unique(index.tokens[rng.choice(len(index), size=rate, p=weight)])
        pos = market.positions(tokens)
        market.trade(pos)
        ticks = ticks_from_kite(market.snapshot(pos), clock.stamp(len(pos), int((start + second) * 1e6)))
        for underlying, batch in split_by_underlying(ticks, index)[0].items():
            engines.seed_requests(underlying, batch)
            engines.process(underlying, batch)
            n += len(batch)
    return engines, n, time.perf_counter() - began


def _median_s(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def _pg_save_s(dsn: str, blob: bytes, repeat: int = 5) -> float:
    import asyncpg

    from sinks.checkpoint_store import CheckpointKey, save_checkpoint
    from sinks.migrate import migrate

    schema = "strikeflow_bench_checkpoint"
    await migrate(dsn, schema)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        times = []
        for i in range(repeat):
            t0 = time.perf_counter()
            await save_checkpoint(pool, schema, CheckpointKey("bench", "ticks", 0), i, FORMAT, blob)
            times.append(time.perf_counter() - t0)
        await pool.execute(f'DROP SCHEMA "{schema}" CASCADE')
        return statistics.median(times)
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=120, help="exchange seconds of trading before the snapshot")
    parser.add_argument("--rate", type=int, default=2000, help="ticks drawn per exchange second (before dedup)")
    parser.add_argument("--pg", help="PostgreSQL DSN: also time the save into worker_checkpoints")
    args = parser.parse_args()
    engines, n, fed_s = _run(args.seconds, args.rate)
    names = engines.underlyings()
    held = {u: engines.get(u).bars.aggregator.state_size() for u in names}
    instruments = len(engines.index)
    blob = engines.snapshot(names)
    snap_s = _median_s(lambda: engines.snapshot(names))
    restore_s = _median_s(lambda: Engines(engines.config, engines.index).restore(blob))
    print(f"instruments {instruments:,}; {n:,} ticks over {args.seconds} exchange s ({n / fed_s:,.0f} ticks/s fed)")
    for u, sizes in held.items():
        print(f"  {u}: open {sizes['open_ticks']:,} ticks, retained {sizes['retained_ticks']:,} ticks in "
              f"{sizes['retained_buckets']} buckets, {sizes['instruments']:,} instruments")
    print(f"checkpoint {len(blob) / 2**20:,.1f} MiB ({len(blob) / max(n, 1):,.0f} bytes per tick seen); "
          f"snapshot {snap_s * 1000:,.1f} ms, restore {restore_s * 1000:,.1f} ms (median of 5)")
    if args.pg:
        print(f"save into PostgreSQL {asyncio.run(_pg_save_s(args.pg, blob)) * 1000:,.1f} ms (median of 5)")


if __name__ == "__main__":
    main()
