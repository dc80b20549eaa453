"""`strikeflow backfill` end to end: the simulator's Kite historical endpoint, kiteconnect, the real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys

import aiohttp
import asyncpg
import numpy as np
import pytest

from pipeline.records.bars import BAR_DTYPE
from pipeline.records.time_units import IST
from sinks.instrument_store import write_instruments
from sinks.migrate import migrate
from sinks.timescale_writer import TimescaleWriter

pytestmark = pytest.mark.integration

LIVE_CLOSE = 12345.0  # a live bar's close no candle has


async def _trade_for(addr: str, tokens: list[int], seconds: float) -> None:
    """Subscribe every token in full mode and read the feed: the simulator trades only while it streams."""
    async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://{addr}/?api_key=k&access_token=t") as ws:
        await ws.send_str(json.dumps({"a": "subscribe", "v": tokens}))
        await ws.send_str(json.dumps({"a": "mode", "v": ["full", tokens]}))
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            await asyncio.wait_for(ws.receive(), 5)


async def _strikeflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the command without blocking the event loop the simulator serves on."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STRIKEFLOW_", "KITE_"))}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "pipeline.commands.cli", *args,
                                                env={**clean, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, IST).isoformat()


async def test_backfill_fills_gaps_from_historical_candles_and_keeps_live_bars(
        kite_simulator, pg_dsn: str, pg_schema: str) -> None:
    simulator, addr = await kite_simulator(speed=60, strikes=2, expiries=1)
    tokens = [int(r["instrument_token"]) for r in simulator.rows]
    await migrate(pg_dsn, pg_schema)
    await write_instruments(pg_dsn, pg_schema, simulator.rows)
    await _trade_for(addr, tokens, 7.0)  # about 7 simulated minutes
    # nobody streams now, so nothing trades: about 2 simulated minutes without any trade (and the endpoint's
    # rate window passes)
    await asyncio.sleep(2.5)
    since = simulator.start_ts
    until = int(simulator.exchange_now()) // 60 * 60  # the minute in progress is not complete: leave it
    # a live bar the backfill must not touch
    option = next(int(r["instrument_token"]) for r in simulator.rows if r["instrument_type"] == "CE")
    live_minute = int(since) // 60 * 60 + 120
    live = np.zeros(1, BAR_DTYPE)
    for name, value in dict(instrument_token=option, interval_s=60, bucket=live_minute, open=LIVE_CLOSE,
                            high=LIVE_CLOSE, low=LIVE_CLOSE, close=LIVE_CLOSE, volume=5, tick_count=3,
                            last_recv_ts=1).items():
        live[name] = value
    conn = await asyncpg.connect(pg_dsn)
    try:
        await TimescaleWriter(conn, pg_schema).write_bars(60, live)
        env = {"STRIKEFLOW_PG_DSN": pg_dsn, "STRIKEFLOW_PG_SCHEMA": pg_schema,
               "STRIKEFLOW_KITE_API_URL": f"http://{addr}", "KITE_API_KEY": "k", "KITE_ACCESS_TOKEN": "t"}
        done = await _strikeflow("backfill", "--since", _iso(since), "--until", _iso(until), env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "backfilled" in done.stdout and "bars_1m" in done.stdout, done.stdout
        stored = await conn.fetch(f'SELECT instrument_token, extract(epoch FROM bucket)::bigint AS b, open, high, '
                                  f'low, close, volume, oi, source, iv FROM "{pg_schema}".bars_1m')
        five = await conn.fetch(f'SELECT instrument_token, extract(epoch FROM bucket)::bigint AS b, open, high, low, '
                                f'close, volume FROM "{pg_schema}".bars_5m')
    finally:
        await conn.close()
    assert simulator.historical.throttled == 0  # the client kept Kite's 3 requests/s
    by_key = {(r["instrument_token"], r["b"]): r for r in stored}
    assert by_key[(option, live_minute)]["close"] == LIVE_CLOSE and by_key[(option, live_minute)]["source"] == "live"
    # every candle of a gap minute is a historical bar with the candle's numbers, and nothing else is
    expected = {}
    for token in tokens:  # the simulator's own record of the trades it streamed
        for minute, (o, h, low, c, volume, oi) in simulator.candles.between(token, since, until - 1):
            if (token, minute) != (option, live_minute):
                expected[(token, minute)] = (o, h, low, c, volume, oi)
    historical = {k: (r["open"], r["high"], r["low"], r["close"], r["volume"], r["oi"])
                  for k, r in by_key.items() if r["source"] == "historical"}
    assert len(expected) > 50 and historical == expected
    options = {int(r["instrument_token"]) for r in simulator.rows if r["instrument_type"] in ("CE", "PE")}
    assert any(r["iv"] is not None for k, r in by_key.items() if k[0] in options and r["source"] == "historical")
    # 5-minute bars: the plain grouping of the stored 1-minute bars (live and historical) of each bucket
    groups: dict[tuple[int, int], list] = {}
    for (token, minute), r in sorted(by_key.items(), key=lambda kv: kv[0][1]):
        groups.setdefault((token, minute // 300 * 300), []).append(r)
    want = {k: (g[0]["open"], max(r["high"] for r in g), min(r["low"] for r in g), g[-1]["close"],
                sum(r["volume"] for r in g)) for k, g in groups.items()}
    got = {(r["instrument_token"], r["b"]): (r["open"], r["high"], r["low"], r["close"], r["volume"]) for r in five}
    assert got and got == want
    # minutes without a trade (no candle, no bar) were asked for once and recorded as such
    no_trade = sum(1 for token in tokens for minute in range(int(since) // 60 * 60, until, 60)
                   if (token, minute) not in by_key)
    assert no_trade > 0 and f"{no_trade:,} minutes without trades" in done.stdout, done.stdout
    # a second run over the same range finds the gaps filled or known to have no trades: no request, nothing written
    again = await _strikeflow("backfill", "--since", _iso(since), "--until", _iso(until), env=env)
    assert again.returncode == 0, again.stderr
    assert "0 gap minutes; 0 requests" in again.stdout and "wrote nothing" in again.stdout, again.stdout


async def test_backfill_errors_are_one_line(kite_simulator, pg_dsn: str, pg_schema: str) -> None:
    simulator, addr = await kite_simulator(api_key="k", access_token="right")
    await migrate(pg_dsn, pg_schema)
    await write_instruments(pg_dsn, pg_schema, simulator.rows)
    base = {"STRIKEFLOW_PG_DSN": pg_dsn, "STRIKEFLOW_PG_SCHEMA": pg_schema, "STRIKEFLOW_KITE_API_URL": f"http://{addr}"}
    start = simulator.start_ts
    cases = [
        (["--since", _iso(start + 600), "--until", _iso(start)], {}, 2, "is not before --until"),
        (["--since", _iso(start), "--until", _iso(start + 600), "--underlyings", "NOPE"], {}, 2,
         "unknown underlying NOPE"),
        (["--since", _iso(start), "--until", _iso(start + 600)], {"KITE_API_KEY": "k", "KITE_ACCESS_TOKEN": "wrong"},
         1, "Kite refused the historical request (TokenException"),
    ]
    for args, extra, code, says in cases:
        done = await _strikeflow("backfill", *args, env={**base, **extra})
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == code and says in lines[-1], done.stderr
        assert "wrong" not in done.stderr and "Traceback" not in done.stderr
